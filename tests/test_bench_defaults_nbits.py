"""bench_defaults_nbits: a stored nbits-4 index is measured at today's defaults and the former (nbits-2) values,
and each argument a user can get wrong stops with a message naming the fix."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_defaults_nbits  # noqa: E402
import bench_engine  # noqa: E402

import plaidx  # noqa: E402


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_defaults_nbits, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(bench_engine, "RESULTS_DIR", tmp_path / "results")
    (tmp_path / "results").mkdir()
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((int(n), 32)).astype(np.float32) for n in rng.integers(8, 20, 60)]
    plaidx.Index.build(tmp_path / "runs" / "run" / "index", docs, nbits=4, nlist=16, kmeans_niters=2)
    queries = np.stack([d[:4] for d in docs[:6]])
    scores = np.array([[(q @ d.T).max(axis=1).sum() for d in docs] for q in queries])
    (tmp_path / "coll").mkdir()
    np.save(tmp_path / "coll" / "queries.npy", queries)
    np.savez(tmp_path / "coll" / "gt_top100.npz", ids=np.argsort(-scores, axis=1, kind="stable"))
    return tmp_path


def run(*extra: str) -> None:
    bench_defaults_nbits.main(["--collections", "", "--index", "a=run", "--collection-dir", "coll", "--k", "10",
                               "--timed-queries", "3", "--tag", "t", *extra])


def test_both_settings_are_measured_on_the_stored_index(cache):
    run("--nbits", "4", "--exhaustive")
    report = json.loads((cache / "results" / "defaults_nbits4_t.json").read_text())
    (row,) = report["rows"]
    assert row["collection"] == "a" and row["k"] == 10 and report["nbits"] == 4
    assert row["before"] == {"nprobe": 2, "centroid_score_threshold": 0.4, "ndocs": 1024, "n_exact": 128}
    assert row["now"] == {"nprobe": 4, "centroid_score_threshold": 0.4, "ndocs": 2048, "n_exact": 256}
    for key in ("before_recall", "now_recall", "exhaustive_recall"):
        assert 0.0 <= row[key] <= 1.0
    assert row["before_p50_ms"] > 0 and row["p50_ratio"] == pytest.approx(row["now_p50_ms"] / row["before_p50_ms"])
    assert "| a | " in (cache / "results" / "defaults_nbits4_t.md").read_text()


def test_wrong_arguments_name_the_fix(cache):
    with pytest.raises(SystemExit, match="has nbits 4, not --nbits 2"):
        run("--nbits", "2")
    with pytest.raises(SystemExit, match="values from 1 to 100"):
        run("--k", "200")
    with pytest.raises(SystemExit, match="one --collection-dir per --index"):
        bench_defaults_nbits.main(["--collections", "", "--index", "a=run", "--tag", "t"])
    with pytest.raises(SystemExit, match="no queries.npy and gt_top100.npz"):
        bench_defaults_nbits.main(["--collections", "", "--index", "a=run", "--collection-dir", "nothing"])
