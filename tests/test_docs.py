"""Every code block of README.md and docs/ runs, and the documentation site builds with mkdocs --strict.

Each page's ```python and ```bash blocks run in order, in a fresh temporary folder of its own: python
blocks share one namespace per page (a page reads like a notebook), bash blocks run with the venv's
``plaidx`` on PATH. One driver process runs every page, so torch and the model load once. A block whose first line is ``# docs-test: skip (reason)`` is not run (the
reason is required: a GPU, a Ray cluster, a server URL, the network). Other languages (text, json,
console) are prose.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>[A-Za-z0-9_+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ ]*$",
                   re.S | re.M)
SKIP = re.compile(r"^#\s*docs-test:\s*skip\b(?P<why>.*)$")
RUN_LANGS = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}

DRIVER = textwrap.dedent(r"""
    import json, os, subprocess, sys, traceback
    pages = json.load(open(sys.argv[1]))
    outcome = {}
    for page, (folder, blocks) in pages.items():
        os.chdir(folder)
        namespace = {"__name__": "__docs__"}
        outcome[page] = "ok"
        for b in blocks:
            where = f"{b['page']}:{b['line']} ({b['lang']})"
            if b["lang"] == "python":
                try:
                    exec(compile(b["code"], where, "exec"), namespace)
                except BaseException:
                    outcome[page] = f"{where} raised:\n{traceback.format_exc()[-4000:]}"
                    break
            else:
                res = subprocess.run(["bash", "-euo", "pipefail", "-c", b["code"]], capture_output=True, text=True)
                if res.returncode != 0:
                    outcome[page] = (f"{where} exited {res.returncode}:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}")
                    break
        json.dump(outcome, open(sys.argv[2], "w"))
""")


def extract_blocks(text: str, name: str) -> tuple[list[dict], list[dict]]:
    """(blocks to run, skipped blocks) of one page's markdown, in order, with the line each starts on."""
    run, skipped = [], []
    for m in FENCE.finditer(text):
        lang = RUN_LANGS.get(m.group("lang").lower())
        if lang is None:
            continue
        code = textwrap.dedent(m.group("body"))
        line = text.count("\n", 0, m.start()) + 1
        block = {"page": name, "line": line, "lang": lang, "code": code}
        first = code.strip().splitlines()[0] if code.strip() else ""
        skip = SKIP.match(first)
        if skip:
            block["why"] = skip.group("why").strip(" :()-")
            skipped.append(block)
        else:
            run.append(block)
    return run, skipped


def _blocks_of(page: Path) -> tuple[list[dict], list[dict]]:
    return extract_blocks(page.read_text(), str(page.relative_to(ROOT)))


def test_extractor_reads_fences_and_skip_markers() -> None:
    body = ("intro\n\n```python\nx = 1\n```\n\n```text\nnot code\n```\n\n"
            "```bash\n# docs-test: skip (needs a GPU)\nnvidia-smi\n```\n\n  ```py\n  y = 2\n  ```\n")
    run, skipped = extract_blocks(body, "probe.md")
    assert [(b["lang"], b["code"], b["line"]) for b in run] == [("python", "x = 1\n", 3), ("python", "y = 2\n", 16)]
    assert [(b["code"].splitlines()[-1], b["why"]) for b in skipped] == [("nvidia-smi", "needs a GPU")]


def test_every_skip_says_why() -> None:
    for page in PAGES:
        _, skipped = _blocks_of(page)
        for b in skipped:
            assert b["why"], f"{b['page']}:{b['line']}: a docs-test skip marker must give its reason"


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="module")
def docs_outcome(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Runs every page's blocks in one driver process (torch and the model load once), each page in a fresh
    folder and namespace; returns {page: "ok" or what failed}."""
    base = tmp_path_factory.mktemp("docs")
    pages = {}
    for i, page in enumerate(PAGES):
        blocks, _ = _blocks_of(page)
        if blocks:
            folder = base / f"page{i}"
            folder.mkdir()
            pages[str(page.relative_to(ROOT))] = (str(folder), blocks)
    (base / "blocks.json").write_text(json.dumps(pages))
    (base / "driver.py").write_text(DRIVER)
    res = subprocess.run([sys.executable, str(base / "driver.py"), str(base / "blocks.json"), str(base / "out.json")],
                         cwd=base, env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"the docs driver crashed:\n{res.stdout[-2000:]}\n{res.stderr[-6000:]}"
    return json.loads((base / "out.json").read_text())


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_code_blocks_run(page: Path, docs_outcome: dict[str, str]) -> None:
    name = str(page.relative_to(ROOT))
    if not _blocks_of(page)[0]:
        pytest.skip(f"{name} has no runnable code block")
    assert docs_outcome.get(name) == "ok", f"a code block of {name} failed: {docs_outcome.get(name)}"


def test_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="the docs extra is not installed (pip install -e '.[docs]')")
    cache = tmp_path / "openapi.json"  # a copy: a stale schema is regenerated there, never in the tree
    if (ROOT / "docs" / "openapi.json").is_file():
        shutil.copy(ROOT / "docs" / "openapi.json", cache)
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], cwd=ROOT, env={**_env(), "PLAIDX_OPENAPI_CACHE": str(cache)},
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    html = (tmp_path / "site" / "http" / "index.html").read_text()
    assert "/v1/search" in html, "the HTTP page lost its endpoints generated from the OpenAPI schema"
    reference = (tmp_path / "site" / "reference" / "engine" / "index.html").read_text()
    assert "search" in reference and "SearchParams" in reference, "mkdocstrings rendered no engine API"
    assert "fonts.googleapis" not in html, "the site must not load web fonts (theme font: false)"



def test_pareto_keeps_the_points_nothing_beats() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from plots import pareto
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    points = [(2.0, 0.80), (1.0, 0.70), (3.0, 0.79), (1.5, 0.70), (4.0, 0.90)]
    assert pareto(points) == [(1.0, 0.70), (2.0, 0.80), (4.0, 0.90)]


def test_plots_are_drawn_from_the_result_files(tmp_path: Path) -> None:
    """benchmarks/plots.py draws every picture of the benchmarks page from benchmarks/results alone."""
    pytest.importorskip("matplotlib", reason="the docs extra is not installed (pip install -e '.[docs]')")
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "plots.py"), "--out", str(tmp_path)], cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    drawn = sorted(p.name for p in tmp_path.glob("*.png"))
    assert drawn == ["build_cost.png", "bytes_per_token.png", "gpu_cpu.png", "recall_latency.png"]
    for name in drawn:
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (ROOT / "docs" / "img" / name).is_file(), f"docs/img/{name} is missing: run benchmarks/plots.py"
    pages = (ROOT / "docs" / "benchmarks.md").read_text() + (ROOT / "docs" / "gpu.md").read_text()
    assert all(f"img/{name}" in pages for name in drawn), "a picture is drawn but shown on no page"


def test_results_index_names_every_report() -> None:
    """benchmarks/results/README.md lists every report that is in the results folder, and no deleted one."""
    index = (ROOT / "benchmarks" / "results" / "README.md").read_text()
    reports = {p.stem for p in (ROOT / "benchmarks" / "results").glob("*.md") if p.name != "README.md"}
    tracked = subprocess.run(["git", "ls-files", "benchmarks/results"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    committed = {Path(f).stem for f in tracked.stdout.split() if f.endswith(".md") and not f.endswith("README.md")}
    missing = sorted(r for r in reports & committed if f"({r}.md)" not in index)
    assert not missing, f"benchmarks/results/README.md does not list {missing}"
    listed = set(re.findall(r"\(([\w.\-]+)\.md\)", index))
    gone = sorted(listed - reports)
    assert not gone, f"benchmarks/results/README.md lists reports that do not exist: {gone}"
