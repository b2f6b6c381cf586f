"""bench_ab's stored-index options: each way of getting them wrong stops with a message naming the fix."""

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_ab  # noqa: E402


def test_each_index_needs_its_collection():
    with pytest.raises(SystemExit, match="one --collection-dir per --index"):
        bench_ab.main(["--base", "/nonexistent", "--tag", "t", "--index", "a=run"])


def test_a_wrong_k_or_nbits_is_named_before_anything_loads():
    with pytest.raises(SystemExit, match="--k: a positive number"):
        bench_ab.main(["--base", "/nonexistent", "--tag", "t", "--k", "0"])
    with pytest.raises(SystemExit, match="--nbits: 1, 2, 4 or 8"):
        bench_ab.main(["--base", "/nonexistent", "--tag", "t", "--nbits", "3"])
    for flag, value, message in (("--new-params", "{nprobe: 4}", "--new-params: not JSON"),
                                 ("--params", "[4]", "--params: give an object"),
                                 ("--params-list", '{"nprobe": 4}', "--params-list: give a list of objects"),
                                 ("--new-params", '{"nprobes": 4}', "--new-params: unknown knob nprobes")):
        with pytest.raises(SystemExit, match=message):
            bench_ab.main(["--base", "/nonexistent", "--tag", "t", flag, value])
    for fraction in ("0", "1", "-0.5"):
        with pytest.raises(SystemExit, match="--filter: the fraction of the documents allowed, between 0 and 1"):
            bench_ab.main(["--base", "/nonexistent", "--tag", "t", "--filter", fraction])


def test_a_missing_index_or_collection_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_ab, "CACHE_DIR", tmp_path)
    (tmp_path / "runs" / "run" / "index").mkdir(parents=True)
    (tmp_path / "runs" / "run" / "index" / "manifest.json").write_text("{}")
    cases = [(["run"], "give NAME=DIR"),              # no NAME=
             (["a=elsewhere"], "give NAME=DIR with an index at"),  # no index there
             (["a=run"], "no queries.npy and gt_top100.npz")]      # the collection lacks its files
    for index, message in cases:
        with pytest.raises(SystemExit, match=message):
            list(bench_ab.indexes(argparse.Namespace(index=index, collection_dir=["coll"], collections=""), 10))


def test_a_deep_k_is_measured_against_the_exact_top_k(tmp_path, monkeypatch):
    # this checkout against itself at k 120 on a stored index: the exact top-120 is computed over the collection's
    # embeddings and cached, both sides return the same documents and the report names recall@120
    import json

    from bench_cache import small_stored_cache

    small_stored_cache(tmp_path, monkeypatch, bench_ab, truth=True, n_docs=150, complete=True)
    root = Path(__file__).resolve().parents[1]
    assert bench_ab.main(["--base", str(root), "--tag", "t", "--index", "a=run", "--collection-dir", "coll",
                          "--k", "120", "--rounds", "1"]) == 0
    assert (tmp_path / "coll" / "gt_top120.npz").exists()
    row = json.loads((tmp_path / "results" / "ab_t.json").read_text())["rows"][0]
    assert row["same_topk"] and row["recall_new"] == row["recall_base"] > 0.5
    assert "recall@120 new / base" in (tmp_path / "results" / "ab_t.md").read_text()


def test_a_filtered_search_is_measured_against_the_exact_top_k_among_the_allowed(tmp_path, monkeypatch):
    # --filter 0.3: both sides search 45 of 150 documents; the truth is the exact top-10 among them, which is the
    # unfiltered exact ranking restricted to them
    import json

    from bench_cache import small_stored_cache
    from collection import exact_topk_cached, load_collection

    small_stored_cache(tmp_path, monkeypatch, bench_ab, truth=True, n_docs=150, complete=True)
    args = argparse.Namespace(index=["a=run"], collection_dir=["coll"], collections="", filter=0.3, threads=2)
    bench = next(bench_ab.indexes(args, 10))
    assert len(bench.doc_ids) == 45 and np.all(np.diff(bench.doc_ids) > 0)
    full = exact_topk_cached(load_collection(tmp_path / "coll"), 150)[1]
    for got, ranking in zip(bench.truth, full):
        np.testing.assert_array_equal(got, ranking[np.isin(ranking, bench.doc_ids)][:10])
    root = Path(__file__).resolve().parents[1]
    assert bench_ab.main(["--base", str(root), "--tag", "t", "--index", "a=run", "--collection-dir", "coll",
                          "--filter", "0.3", "--rounds", "1"]) == 0
    row = json.loads((tmp_path / "results" / "ab_t.json").read_text())["rows"][0]
    assert row["allowed_docs"] == 45 and row["same_topk"] and row["recall_new"] == row["recall_base"] > 0.5
    assert "filtered to a seeded 0.3 of the documents" in (tmp_path / "results" / "ab_t.md").read_text()


def test_new_params_time_two_settings_of_one_build(tmp_path, monkeypatch):
    # --base this checkout and --new-params: the new side scores the exact stage in float32 (a SearchParams field,
    # passed as params=), the base by the default lookup tables; the report names the new side's knobs
    import json

    from bench_cache import small_stored_cache

    small_stored_cache(tmp_path, monkeypatch, bench_ab, truth=True, n_docs=150, complete=True)
    root = Path(__file__).resolve().parents[1]
    assert bench_ab.main(["--base", str(root), "--tag", "t", "--index", "a=run", "--collection-dir", "coll",
                          "--new-params", '{"exact_scores": "float32"}', "--rounds", "1"]) == 0
    row = json.loads((tmp_path / "results" / "ab_t.json").read_text())["rows"][0]
    assert row["new_params"] == {"exact_scores": "float32"} and row["params"] == {}
    assert not row["same_topk"] and row["recall_new"] > 0.3 and row["recall_base"] > 0.3  # the knob took effect
    assert 'also searches with {"exact_scores": "float32"}' in (tmp_path / "results" / "ab_t.md").read_text()
    kw = bench_ab.search_kwargs(bench_ab.plaidx, {"exact_scores": "float32", "nprobe": 4, "doc_ids": [1]})
    assert kw["params"].exact_scores == "float32" and kw["params"].nprobe == 4 and kw["doc_ids"] == [1]
    assert bench_ab.search_kwargs(bench_ab.plaidx, {"nprobe": 4}) == {"nprobe": 4}
