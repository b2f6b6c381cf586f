"""benchmarks/bench_where.py: the metadata-filter cost benchmark runs and reports what its filters match."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_engine  # noqa: E402
import bench_where  # noqa: E402


def test_the_report_counts_what_each_filter_matches(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_engine, "RESULTS_DIR", tmp_path)
    assert bench_where.main(["--docs", "300,600", "--repeats", "1", "--tag", "t"]) == 0
    rows = json.loads((tmp_path / "where_t.json").read_text())["rows"]
    assert [(r["documents"], r["indexed"], r["filter"]) for r in rows] == [
        (n, x, f) for n in (300, 600) for x in (False, True) for f in bench_where.FILTERS]
    # documents i: lang ("en", "de", "fr")[i % 3], year 1990 + i % 35, user f"u{i % 3000}", tags ["a", "b"][:i % 3]
    for r in rows:
        n = r["documents"]
        want = {"equality": sum(i % 3 == 0 for i in range(n)), "range": sum(i % 35 >= 30 for i in range(n)),
                "list contains": sum(i % 3 == 2 for i in range(n)),
                "$in and range": sum(i % 3 > 0 and i % 35 < 10 for i in range(n)),
                "selective": sum(i % 3000 == 17 for i in range(n))}[r["filter"]]
        assert r["matched"] == want and r["ms"] > 0 and r["ms_cached"] < r["ms"]
    assert "| 600 | range |" in (tmp_path / "where_t.md").read_text()
