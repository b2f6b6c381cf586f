"""bench_cold: each way of naming the stored index wrong stops with a message naming the fix, and a cold start
of a small index runs end to end (the folder evicted, opened and searched in a new process)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_cold  # noqa: E402
from bench_cache import small_stored_cache  # noqa: E402


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    return small_stored_cache(tmp_path, monkeypatch, bench_cold)


def test_each_index_needs_its_collection():
    with pytest.raises(SystemExit, match="one --collection-dir per --index"):
        bench_cold.main(["--tag", "t", "--index", "a=run"])


def test_a_missing_index_or_collection_or_too_few_queries_is_named(cache):
    cases = [("run", "coll", 1, "give NAME=DIR"),                          # no NAME=
             ("a=elsewhere", "coll", 1, "give NAME=DIR with an index at"),  # no index there
             ("a=run", "nothing", 1, "no queries.npy"),                     # the collection lacks its queries
             ("a=run", "coll", 7, "is more than the 6 queries")]           # --queries x --rounds too many
    for spec, coll, needed, message in cases:
        with pytest.raises(SystemExit, match=message):
            bench_cold.stored_index_queries(spec, coll, needed)
    with pytest.raises(SystemExit, match="is not built there"):
        bench_cold.main(["--tag", "t", "--index", "a=run", "--collection-dir", "coll", "--base", str(cache)])


def test_a_cold_start_runs_end_to_end(cache):
    bench_cold.main(["--tag", "t", "--index", "a=run", "--collection-dir", "coll", "--rounds", "2", "--queries",
                     "3", "--params-list", '[{"nprobe": 4}]'])
    report = json.loads((cache / "results" / "cold_t.json").read_text())
    (row,) = report["rows"]
    assert row["index"] == "a" and row["params"] == {"nprobe": 4} and row["new"]["cold_starts"] == 2
    assert 0 < row["new"]["first_ms"] and 0 < row["new"]["median_ms"] <= row["new"]["mean_ms"] * 3
    assert "| a | {\"nprobe\": 4} | new |" in (cache / "results" / "cold_t.md").read_text()
