"""Crash safety, the writer lock, concurrent readers, and corrupted or fuzzed on-disk files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import plaidx
from plaidx.engine.storage import ArrayEntry, load_array, validate_manifest
from plaidx.errors import IndexFormatError, IndexLockedError

WORKER = Path(__file__).with_name("crash_worker.py")
KILL_POINTS = 30  # SIGKILLs per crash test run


def _journal(path: Path) -> tuple[dict[int, list[int]], int]:
    intents, done = {}, 0
    if path.exists():
        text = path.read_text()
        for line in text[: text.rfind("\n") + 1].splitlines():  # a line still being written is skipped
            rec = json.loads(line)
            if "intent" in rec:
                intents[rec["intent"]] = sorted(rec["live"])
            else:
                done = max(done, rec["done"])
    return intents, done


def _wait_for_progress(journal: Path, lines_before: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if journal.exists() and len(journal.read_text().splitlines()) > lines_before:
            return
        if proc.poll() is not None:
            raise AssertionError(f"crash worker exited early: {proc.stderr.read().decode()}")
        time.sleep(0.01)
    raise AssertionError("crash worker made no progress")


def test_sigkill_at_random_points_keeps_the_last_commit(tmp_path):
    index_path, journal = tmp_path / "idx", tmp_path / "journal.jsonl"
    rng = np.random.default_rng(0)
    mid_operation = 0
    generations_seen = set()
    for kill in range(KILL_POINTS):
        lines = len(journal.read_text().splitlines()) if journal.exists() else 0
        proc = subprocess.Popen([sys.executable, str(WORKER), str(index_path), str(journal), str(kill)],
                                stderr=subprocess.PIPE)
        try:
            # the first kills land inside the initial build; later ones inside add/delete/compact
            _wait_for_progress(journal, lines + (0 if kill < 3 else 2), proc)
            time.sleep(float(rng.uniform(0.0, 0.05 if kill < 3 else 0.4)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        intents, done = _journal(journal)
        if not intents:
            continue
        last_intent = max(intents)
        mid_operation += last_intent > done
        try:
            index = plaidx.Index.open(index_path, verify="full")
        except IndexFormatError:
            assert done == 0, "a committed index failed to open after SIGKILL"
            continue
        g = index.generation
        generations_seen.add(g)
        # the last journaled commit, or a later one whose "done" line the kill cut off (a worker that
        # reopened that generation may already have journaled the next intent)
        assert g in intents and done <= g <= last_intent, (g, done, last_intent)
        assert index.ids.tolist() == intents[g], f"generation {g} does not hold exactly its committed documents"
        assert index.verify() == []
        q = np.random.default_rng(kill).standard_normal((2, 4, 16)).astype(np.float32)
        _, ids = index.search(q, k=5)
        assert set(ids[ids >= 0].tolist()) <= set(intents[g])
    # the kills must land inside operations, not only between them
    assert mid_operation >= KILL_POINTS // 4, f"only {mid_operation} of {KILL_POINTS} kills hit an operation"
    assert len(generations_seen) >= 5


def test_second_writer_gets_a_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((6, 16)).astype(np.float32) for _ in range(40)]
    idx = plaidx.Index.build(tmp_path / "i", docs, nlist=16)
    from plaidx.engine.storage import WriterLock

    with WriterLock(tmp_path / "i"):
        with pytest.raises(IndexLockedError, match="another writer"):
            idx.add(docs[:2])
        with pytest.raises(IndexLockedError):
            plaidx.Index.build(tmp_path / "i", docs, overwrite=True)
    assert len(plaidx.Index.open(tmp_path / "i")) == 40
    idx.add(docs[:2])  # the lock is free again
    assert len(idx) == 42


def test_a_commit_that_fails_before_its_manifest_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((6, 16)).astype(np.float32) for _ in range(40)]
    idx = plaidx.Index.build(tmp_path / "i", docs, nlist=16)
    files = sorted(p.name for p in (tmp_path / "i").iterdir())
    import plaidx.engine.storage as storage

    def full_disk(path):  # the arrays are renamed into place, then the folder cannot be synced
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage, "fsync_dir", full_disk)
    with pytest.raises(OSError, match="No space left"):
        idx.add(docs[:3])
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "i").iterdir()) == files  # no renamed array, no manifest temp file
    assert len(plaidx.Index.open(tmp_path / "i", verify="full")) == 40


def test_readers_see_only_committed_generations_while_a_writer_works(tmp_path):
    index_path, journal = tmp_path / "idx", tmp_path / "journal.jsonl"
    proc = subprocess.Popen([sys.executable, str(WORKER), str(index_path), str(journal), "7"],
                            stderr=subprocess.PIPE)
    errors: list[str] = []
    checked = [0]
    try:
        _wait_for_progress(journal, 1, proc)

        def reader(seed: int) -> None:
            try:
                read_loop(seed)
            except Exception as exc:  # a reader must never fail while a writer commits
                errors.append(f"reader {seed}: {exc!r}")

        def read_loop(seed: int) -> None:
            rng = np.random.default_rng(seed)
            end = time.monotonic() + 4.0
            index = plaidx.Index.open(index_path)
            while time.monotonic() < end:
                q = rng.standard_normal((3, 4, 16)).astype(np.float32)
                _, ids = index.search(q, k=8, nprobe=16, centroid_score_threshold=-10, ndocs=4096)
                intents, _ = _journal(journal)
                live = set(intents.get(index.generation, []))
                got = set(ids[ids >= 0].tolist())
                if not got <= live:
                    errors.append(f"gen {index.generation}: ids {sorted(got - live)} are not live")
                checked[0] += 1
                index.reload()

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not errors, errors[:5]
    assert checked[0] > 10
    _, done = _journal(journal)
    assert done >= 3, "the writer made too few commits for the test to mean anything"


# ---------------------------------------------------------------- fuzzing the loaders
_VALID = {"format": "plaidx-index", "format_version": 1, "generation": 1, "dim": 16, "nbits": 2, "nlist": 16,
          "n_docs": 3, "n_tokens": 10, "next_id": 3, "arrays": {}}

json_values = st.recursive(st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True)
                           | st.text(max_size=12),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(sorted(_VALID)), value=json_values)
def test_fuzzed_manifest_fields_fail_cleanly(key, value):
    manifest = {**_VALID, key: value}
    try:
        validate_manifest(manifest)
    except IndexFormatError as exc:
        assert str(exc)
    # anything accepted must keep the field types the loader relies on
    else:
        assert isinstance(manifest["arrays"], dict) and isinstance(manifest["dim"], int)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300), keep=st.integers(0, 200))
def test_fuzzed_array_files_fail_cleanly(tmp_path, data, keep):
    good = tmp_path / "codes.000001.npy"
    np.save(good, np.arange(20, dtype=np.uint16))
    raw = good.read_bytes()
    blob = raw[:keep] + data
    bad = tmp_path / "codes.000002.npy"
    bad.write_bytes(blob)
    entry = ArrayEntry(bad.name, "<u2", (20,), 0)
    try:
        arr = load_array(tmp_path, "codes", entry, verify=False)
    except IndexFormatError:
        return
    assert arr.shape == (20,) and arr.dtype == np.uint16  # whatever loads has exactly the declared layout


def test_fuzzed_manifest_files_on_disk(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((6, 16)).astype(np.float32) for _ in range(30)]
    path = tmp_path / "i"
    plaidx.Index.build(path, docs, nlist=16)
    raw = (path / "manifest.json").read_bytes()
    failures = 0
    for trial in range(200):
        blob = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            blob[int(rng.integers(0, len(blob)))] = int(rng.integers(0, 256))
        (path / "manifest.json").write_bytes(bytes(blob))
        try:
            idx = plaidx.Index.open(path)
        except IndexFormatError:
            failures += 1
            continue
        except (KeyError, FileNotFoundError, UnicodeDecodeError) as exc:  # pragma: no cover - a bug
            raise AssertionError(f"trial {trial}: unclear error {exc!r}") from exc
        # a mutation that still opens (e.g. in a timestamp) must not change what is found
        assert len(idx) == 30
    (path / "manifest.json").write_bytes(raw)
    assert failures > 100
    assert os.path.exists(path / "manifest.json")
