"""Every code block of README.md and docs/ runs, and the documentation site builds with mkdocs --strict.

Each page's ```python and ```bash blocks run in order, in one fresh temporary folder, by one driver
process: python blocks share a namespace (a page reads like a notebook), bash blocks run with the
venv's ``plaidx`` on PATH. A block whose first line is ``# docs-test: skip (reason)`` is not run (the
reason is required: a GPU, a Ray cluster, a server URL, the network). Other languages (text, json,
console) are prose.
"""

from __future__ import annotations

import json
import os
import re
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

DRIVER = textwrap.dedent("""
    import json, os, subprocess, sys, traceback
    blocks = json.load(open(sys.argv[1]))
    namespace = {"__name__": "__docs__"}
    for b in blocks:
        where = f"{b['page']}:{b['line']} ({b['lang']})"
        if b["lang"] == "python":
            try:
                exec(compile(b["code"], where, "exec"), namespace)
            except BaseException:
                traceback.print_exc()
                print(f"DOCS BLOCK FAILED: {where}", file=sys.stderr)
                sys.exit(1)
        else:
            res = subprocess.run(["bash", "-euo", "pipefail", "-c", b["code"]], capture_output=True, text=True)
            sys.stdout.write(res.stdout)
            if res.returncode != 0:
                sys.stderr.write(res.stderr)
                print(f"DOCS BLOCK FAILED: {where} exited {res.returncode}", file=sys.stderr)
                sys.exit(1)
    print("DOCS OK", len(blocks))
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


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_code_blocks_run(page: Path, tmp_path: Path) -> None:
    blocks, _ = _blocks_of(page)
    if not blocks:
        pytest.skip(f"{page.name} has no runnable code block")
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    (tmp_path / "driver.py").write_text(DRIVER)
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "blocks.json")], cwd=work,
                         env=_env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{page.name}: a code block failed\n{res.stdout[-2000:]}\n{res.stderr[-6000:]}"
    assert f"DOCS OK {len(blocks)}" in res.stdout


def test_site_builds_strictly(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
    pytest.importorskip("material", reason="the docs extra is not installed (pip install -e '.[docs]')")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    html = (tmp_path / "site" / "http" / "index.html").read_text()
    assert "/v1/search" in html, "the HTTP page lost its endpoints generated from the OpenAPI schema"
    reference = (tmp_path / "site" / "reference" / "engine" / "index.html").read_text()
    assert "search" in reference and "SearchParams" in reference, "mkdocstrings rendered no engine API"
    assert "fonts.googleapis" not in html, "the site must not load web fonts (theme font: false)"

