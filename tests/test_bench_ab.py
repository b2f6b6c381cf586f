"""bench_ab's stored-index options: each way of getting them wrong stops with a message naming the fix."""

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_ab  # noqa: E402


def test_each_index_needs_its_collection():
    with pytest.raises(SystemExit, match="one --collection-dir per --index"):
        bench_ab.main(["--base", "/nonexistent", "--tag", "t", "--index", "a=run"])


def test_a_missing_index_or_collection_is_named(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_ab, "CACHE_DIR", tmp_path)
    (tmp_path / "runs" / "run" / "index").mkdir(parents=True)
    (tmp_path / "runs" / "run" / "index" / "manifest.json").write_text("{}")
    cases = [(["run"], "give NAME=DIR"),              # no NAME=
             (["a=elsewhere"], "give NAME=DIR with an index at"),  # no index there
             (["a=run"], "no queries.npy and gt_top100.npz")]      # the collection lacks its files
    for index, message in cases:
        with pytest.raises(SystemExit, match=message):
            list(bench_ab.indexes(argparse.Namespace(index=index, collection_dir=["coll"])))
