"""bench_defaults_nbits: a stored index is measured at the defaults and at the base table they widen (by nbits,
and by k), and each argument a user can get wrong stops with a message naming the fix."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_ab  # noqa: E402  (its indexes() finds the collections and their truth)
import bench_defaults_nbits  # noqa: E402
from bench_cache import small_stored_cache  # noqa: E402


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    return small_stored_cache(tmp_path, monkeypatch, bench_ab, nbits=4, truth=True)


def run(*extra: str, k: int = 10) -> None:
    bench_defaults_nbits.main(["--collections", "", "--index", "a=run", "--collection-dir", "coll", "--k", str(k),
                               "--timed-queries", "3", "--tag", "t", *extra])


def test_both_settings_are_measured_on_the_stored_index(cache):
    run("--nbits", "4", "--exhaustive")
    report = json.loads((cache / "results" / "defaults_nbits4_t.json").read_text())
    (row,) = report["rows"]
    assert row["collection"] == "a" and row["k"] == 10 and report["nbits"] == 4
    assert row["before"] == {"nprobe": 2, "centroid_score_threshold": float("-inf"), "ndocs": 1024, "n_exact": 128}
    assert row["now"] == {"nprobe": 4, "centroid_score_threshold": float("-inf"), "ndocs": 2048, "n_exact": 256}
    for key in ("before_recall", "now_recall", "exhaustive_recall"):
        assert 0.0 <= row[key] <= 1.0
    assert row["before_p50_ms"] > 0 and row["p50_ratio"] == pytest.approx(row["now_p50_ms"] / row["before_p50_ms"])
    assert "| a | " in (cache / "results" / "defaults_nbits4_t.md").read_text()


def test_the_k_widening_is_measured_at_nbits_2(tmp_path, monkeypatch):
    cache = small_stored_cache(tmp_path, monkeypatch, bench_ab, nbits=2, truth=True)
    run("--nbits", "2", k=50)
    (row,) = json.loads((cache / "results" / "defaults_nbits2_t.json").read_text())["rows"]
    assert row["k"] == 50
    assert row["before"] == {"nprobe": 4, "centroid_score_threshold": float("-inf"), "ndocs": 2048, "n_exact": 256}
    assert row["now"] == {"nprobe": 8, "centroid_score_threshold": float("-inf"), "ndocs": 4096, "n_exact": 512}
    assert 0.0 <= row["before_recall"] <= row["now_recall"] <= 1.0  # 60 documents: both reach them all


def test_wrong_arguments_name_the_fix(cache):
    with pytest.raises(SystemExit, match="has nbits 4, not --nbits 2"):
        run("--nbits", "2")
    with pytest.raises(SystemExit, match="positive values"):
        run("--k", "0")
    with pytest.raises(SystemExit, match="one --collection-dir per --index"):
        bench_defaults_nbits.main(["--collections", "", "--index", "a=run", "--tag", "t"])
    with pytest.raises(SystemExit, match="no queries.npy and gt_top100.npz"):
        bench_defaults_nbits.main(["--collections", "", "--index", "a=run", "--collection-dir", "nothing"])


def test_a_deep_k_needs_the_collections_embeddings(cache):
    # the stored collection folder holds only queries and the exact top-100: a deeper list cannot be found
    with pytest.raises(SystemExit, match="needs the collection's embeddings"):
        bench_defaults_nbits.main(["--collections", "", "--index", "a=run", "--collection-dir", "coll", "--nbits",
                                   "4", "--k", "10,150"])


def test_a_deep_k_finds_the_exact_top_k_over_the_embeddings(tmp_path, monkeypatch):
    cache = small_stored_cache(tmp_path, monkeypatch, bench_ab, truth=True, n_docs=150, complete=True)
    bench_defaults_nbits.main(["--collections", "", "--index", "a=run", "--collection-dir", "coll", "--nbits", "2",
                               "--k", "10,120", "--timed-queries", "3", "--tag", "t"])
    deep = np.load(cache / "coll" / "gt_top120.npz")["ids"]  # computed over values.npy and cached beside it
    np.testing.assert_array_equal(deep[:, :100], np.load(cache / "coll" / "gt_top100.npz")["ids"][:, :100])
    from collection import exact_topk_cached, load_collection

    _, ids = exact_topk_cached(load_collection(cache / "coll"), 110)  # a shallower k reuses the deeper list
    np.testing.assert_array_equal(ids, deep[:, :110])
    assert not (cache / "coll" / "gt_top110.npz").exists()
    rows = json.loads((cache / "results" / "defaults_nbits2_t.json").read_text())["rows"]
    assert [r["k"] for r in rows] == [10, 120]
    # 150 documents, all scored exactly at k 120: only the 2-bit codes' error keeps recall@120 from 1
    assert rows[1]["now_recall"] > 0.9 and rows[1]["now"]["n_exact"] >= 240
