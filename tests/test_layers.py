"""The architecture contracts: pyproject's import-linter contracts hold for plaidx, and they catch breaches.

The contracts (``[tool.importlinter]`` in pyproject.toml): cli above server above rag above
distributed/interop above the encoder and the engine, siblings independent; the engine imports neither
torch, transformers nor any layer above it; no import cycles in plaidx. A second check builds a small
package with the same layout and shows each contract failing when one import breaks it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")
tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[1]
LINT = "import sys\nfrom importlinter.cli import lint_imports_command\nsys.argv[0] = 'lint-imports'\n" \
       "lint_imports_command()\n"


def lint(cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in (extra_path or cwd, REPO)))
    return subprocess.run([sys.executable, "-c", LINT], cwd=cwd, capture_output=True, text=True, env=env,
                          timeout=300)


def test_plaidx_keeps_every_import_contract():
    r = lint(REPO)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    assert {c["type"] for c in contracts} >= {"layers", "forbidden", "acyclic_siblings"}
    assert f"Contracts: {len(contracts)} kept, 0 broken." in r.stdout


PARTS = ("cli", "server", "rag", "distributed", "interop", "encoder", "engine")


def _fake_plaidx(root: Path, imports: dict[str, str]) -> Path:
    """A package ``fakeplaidx`` laid out as plaidx (one subpackage per part, each with two modules), checked by
    plaidx's own contracts; ``imports`` adds lines to ``{part/module: line}``."""
    pkg = root / "fakeplaidx"
    for part in PARTS:
        (pkg / part).mkdir(parents=True)
        (pkg / part / "__init__.py").write_text("")
        for mod in ("a", "b"):
            (pkg / part / f"{mod}.py").write_text(imports.get(f"{part}/{mod}", "") + "\n")
    (pkg / "__init__.py").write_text("")
    # the allowed direction, so that the clean package is not trivially empty
    (pkg / "cli" / "a.py").write_text("from ..server import a\nfrom ..rag import b\n" + imports.get("cli/a", ""))
    (pkg / "rag" / "a.py").write_text("from ..engine import a\nfrom ..encoder import b\n" + imports.get("rag/a", ""))
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    cfg = json.loads(re.sub(r"\bplaidx\b", "fakeplaidx", json.dumps(cfg)))
    lines = ["[tool.importlinter]", f'root_package = "{cfg["root_package"]}"',
             f"include_external_packages = {str(cfg.get('include_external_packages', False)).lower()}"]
    for c in cfg["contracts"]:
        lines.append("[[tool.importlinter.contracts]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in c.items()]
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("breach, broken", [
    ({}, None),
    ({"engine/a": "from ..rag import b"}, "siblings never import"),
    ({"encoder/b": "from ..engine import a"}, "siblings never import"),
    ({"server/a": "from .. import cli"}, "siblings never import"),
    ({"engine/b": "import torch"}, "the engine imports neither"),
    ({"rag/b": "from . import a", "rag/a": "from . import b"}, "no import cycles"),
])
def test_the_contracts_catch_each_kind_of_breach(tmp_path, breach, broken):
    root = _fake_plaidx(tmp_path, breach)
    r = lint(root)
    if broken is None:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
        return
    assert r.returncode != 0, r.stdout[-3000:]
    out = " ".join(r.stdout.split())
    assert "0 broken" not in out and "BROKEN" in out, out[-3000:]
    # the contract named broken is the one expected (its name precedes BROKEN in the summary)
    parts = re.split(r"(KEPT|BROKEN)", out.split("Contracts:")[0])
    status = {name: state for name, state in zip(parts[0::2], parts[1::2])}
    assert [state for name, state in status.items() if broken in name] == ["BROKEN"], status


ENGINE_IMPORTS = """
import importlib
import importlib.abc
import pkgutil
import sys


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "tokenizers"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
import plaidx.engine

names = [m.name for m in pkgutil.walk_packages(plaidx.engine.__path__, "plaidx.engine.")]
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "tokenizers")
                or m.startswith(("plaidx.encoder", "plaidx.rag", "plaidx.server", "plaidx.cli")))
print(len(names), loaded)
"""


def test_the_engine_imports_with_torch_blocked(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", ENGINE_IMPORTS], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    n, loaded = r.stdout.split(" ", 1)
    assert int(n) >= 10 and loaded.strip() == "[]", r.stdout
