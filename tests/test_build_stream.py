"""The build's streamed pass: documents gathered into batches by a reader thread ahead of the assignment
(CPU and GPU builds alike) and compressed by a writer thread behind it, in order, with either thread's
errors raised in the build and no thread left."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import plaidx
from plaidx.engine import inputs
from plaidx.errors import IndexFormatError


def test_batches_keep_order_and_lengths():
    docs = [np.full((n, 8), i, np.float32) for i, n in enumerate([3, 5, 1, 9, 2, 2])]
    lengths: list[int] = []
    out = list(inputs.batches(iter(docs), 8, 6, lengths))
    assert [b.shape[0] for b in out] == [8, 10, 4]  # each block reaches batch_tokens, the last holds the rest
    np.testing.assert_array_equal(np.concatenate(out), np.concatenate(docs))
    assert lengths == [3, 5, 1, 9, 2, 2]
    with pytest.raises(ValueError, match=r"documents\[1\].*dimension"):
        list(inputs.batches(iter([docs[0], np.zeros((2, 16), np.float32)]), 8, 6))


def test_prefetch_preserves_order_and_raises_the_readers_error():
    assert list(inputs.prefetch(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in inputs.prefetch(failing()):
            got.append(item)
    assert got == [1]


def test_prefetch_stops_its_reader_when_the_consumer_stops():
    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    stream = inputs.prefetch(endless(), depth=2)
    assert next(stream) == 0
    stream.close()  # the consumer fails or stops early: the reader thread must end
    assert threading.active_count() == before
    assert len(produced) <= 5  # bounded read-ahead


class _FailingSecondPass:
    """Documents whose document ``fail_at`` fails on its ``on_read``-th read (None: never)."""

    def __init__(self, docs: list[np.ndarray], fail_at: int, on_read: int | None):
        self.docs, self.fail_at, self.on_read, self.reads = docs, fail_at, on_read, 0

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self.docs):
            raise IndexError(i)
        if i == self.fail_at:
            self.reads += 1
            if self.reads == self.on_read:
                raise OSError("the disk went away")
        return self.docs[i]


def test_a_reader_error_fails_the_build_and_leaves_no_thread(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((int(rng.integers(3, 9)), 16)).astype(np.float32) for _ in range(200)]
    probe = _FailingSecondPass(docs, 150, None)
    plaidx.Index.build(tmp_path / "probe", probe, nlist=16, batch_tokens=64)
    before = threading.active_count()
    source = _FailingSecondPass(docs, 150, probe.reads)  # its last read: the compression pass, in the reader
    with pytest.raises(OSError, match="disk went away"):
        plaidx.Index.build(tmp_path / "x", source, nlist=16, batch_tokens=64)
    assert threading.active_count() == before
    with pytest.raises(IndexFormatError):
        plaidx.Index.open(tmp_path / "x")
    # the same documents build, and batching does not change the index
    a = plaidx.Index.build(tmp_path / "a", docs, nlist=16, batch_tokens=64)
    b = plaidx.Index.build(tmp_path / "b", docs, nlist=16, batch_tokens=1 << 16)
    np.testing.assert_array_equal(a._snap.a["codes"], b._snap.a["codes"])
    np.testing.assert_array_equal(a._snap.a["residuals"], b._snap.a["residuals"])


def test_a_writer_error_fails_the_build_and_leaves_no_thread(tmp_path, monkeypatch):
    # batches are compressed and written by a writer thread while the next is assigned: its error (a full
    # disk, say) must reach the build, which then commits nothing
    from plaidx.engine.codec import ResidualCodec

    rng = np.random.default_rng(1)
    docs = [rng.standard_normal((6, 16)).astype(np.float32) for _ in range(120)]
    real, calls = ResidualCodec.compress, []

    def failing(self, x, codes):
        calls.append(x.shape[0])
        if len(calls) == 3:
            raise OSError("No space left on device")
        return real(self, x, codes)

    monkeypatch.setattr(ResidualCodec, "compress", failing)
    before = threading.active_count()
    with pytest.raises(OSError, match="No space left"):
        plaidx.Index.build(tmp_path / "x", docs, nlist=16, batch_tokens=60)
    assert len(calls) == 3  # the build stopped at the failing batch (at most one more was assigned)
    assert threading.active_count() == before
    with pytest.raises(IndexFormatError):
        plaidx.Index.open(tmp_path / "x")
