"""The manylinux wheel installs into a fresh venv with no compiler and no torch, and its engine and CLI work.

Builds the wheel once with scripts/build_wheel.sh (about a minute on 2 cores, plus the fresh venv's
installs: 1-3 minutes in all), so it is marked ``wheel`` and left out of a plain ``pytest``; ``make test``
runs it (``pytest -m wheel tests/test_wheel.py``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_DEPS = ["numpy", "faiss-cpu", "numba", "tqdm"]

# Runs inside the fresh venv, from a folder outside the checkout. Prints one JSON line of findings.
ENGINE_SCRIPT = textwrap.dedent("""
    import json, shutil, sys
    import numpy as np
    import plaidx

    findings = {"plaidx_file": plaidx.__file__,
                "compilers": [c for c in ("cc", "gcc", "c++", "g++", "clang") if shutil.which(c)]}
    try:
        import torch  # noqa: F401
        findings["torch"] = True
    except ImportError:
        findings["torch"] = False
    info = plaidx.build_info()
    findings["backend"], findings["simd"], findings["dispatch"] = info["backend"], info["simd"], info["simd_dispatch"]

    rng = np.random.default_rng(0)
    def unit(n, d=32):
        x = rng.standard_normal((n, d)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    docs = [unit(int(n)) for n in rng.integers(8, 30, size=300)]
    index = plaidx.Index.build(sys.argv[1], docs, nbits=2, nlist=64, seed=0)
    # each document's own tokens as the query: it must come back first
    queries = np.stack([docs[i][:8] for i in (3, 50, 299)])
    _, ids = index.search(queries, k=5)
    findings["self_hits"] = ids[:, 0].tolist()
    exact_scores, exact_ids = index.search(queries, k=5, exact=True)
    findings["exact_self_hits"] = exact_ids[:, 0].tolist()
    new = index.add([unit(12) for _ in range(20)])
    findings["added"] = [int(new[0]), int(new[-1])]
    findings["deleted"] = index.delete([3, int(new[0])])
    _, ids = plaidx.Index.open(sys.argv[1]).search(queries[:1], k=5)
    findings["after_delete"] = ids[0].tolist()
    findings["verify"] = plaidx.Index.open(sys.argv[1]).verify()
    findings["n_docs"] = len(plaidx.Index.open(sys.argv[1]))
    print(json.dumps(findings))
""")


def _run(cmd: list[str], env: dict[str, str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None:
        pytest.skip("building the wheel copies the sources with git ls-files; git is not installed")
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "build_wheel.sh"), str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHON": sys.executable, "PLAIDX_BUILD_JOBS": "2"})
    assert res.returncode == 0, f"build_wheel.sh failed:\n{res.stderr[-4000:]}"
    path = Path(res.stdout.strip().splitlines()[-1])
    assert path.is_file(), res.stdout
    return path


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # The same versions as this environment's, so pip's cache usually answers without the network.
    pins = [f"{name}=={version(name)}" for name in RUNTIME_DEPS]
    res = _run([str(py), "-m", "pip", "install", "-q", *pins], env, tmp_path_factory.getbasetemp())
    if res.returncode != 0:
        pytest.skip(f"could not install the wheel's dependencies ({' '.join(pins)}) from PyPI or pip's cache:\n"
                    f"{res.stderr[-1500:]}")
    res = _run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], env, tmp_path_factory.getbasetemp())
    assert res.returncode == 0, f"installing the wheel failed:\n{res.stderr[-3000:]}"
    return venv


def _bare_env(venv: Path) -> dict[str, str]:
    """Only the venv on PATH (no compiler reachable), no hint of the checkout."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "CC", "CXX", "CUDA_HOME", "PLAIDX_BACKEND", "PLAIDX_SIMD", "VIRTUAL_ENV")}
    env["PATH"] = str(venv / "bin")
    env["CC"] = env["CXX"] = "/nonexistent/no-compiler"
    return env


def test_wheel_is_tagged_manylinux(wheel: Path) -> None:
    platform_tag = wheel.name[:-len(".whl")].split("-")[-1]
    assert re.fullmatch(r"manylinux_\d+_\d+_\w+|manylinux2014_\w+", platform_tag), (
        f"auditwheel did not retag {wheel.name} for manylinux")


def test_fresh_venv_without_compiler_or_torch_runs_the_engine(fresh_venv: Path, tmp_path: Path) -> None:
    env = _bare_env(fresh_venv)
    script = tmp_path / "engine_check.py"
    script.write_text(ENGINE_SCRIPT)
    res = _run([str(fresh_venv / "bin" / "python"), str(script), str(tmp_path / "idx")], env, tmp_path)
    assert res.returncode == 0, f"the engine failed in the fresh venv:\n{res.stderr[-4000:]}"
    f = json.loads(res.stdout.strip().splitlines()[-1])
    assert str(fresh_venv) in f["plaidx_file"], f"imported plaidx from {f['plaidx_file']}, not the installed wheel"
    assert f["compilers"] == [], f"a compiler is reachable: {f['compilers']}"
    assert f["torch"] is False
    assert f["backend"] == "native", f"the wheel's native core did not load: {f}"
    assert "runtime" in f["dispatch"], f["dispatch"]  # AVX-512/AVX2/baseline chosen at run time, not -march
    assert f["self_hits"] == [3, 50, 299]
    assert f["exact_self_hits"] == [3, 50, 299]
    assert f["added"] == [300, 319]
    assert f["deleted"] == 2
    assert 3 not in f["after_delete"]
    assert f["verify"] == []
    assert f["n_docs"] == 318

    # The baseline copy of the kernels (no AVX) gives the same ranking from the same wheel.
    res_base = _run([str(fresh_venv / "bin" / "python"), str(script), str(tmp_path / "idx_base")],
                    {**env, "PLAIDX_SIMD": "baseline"}, tmp_path)
    assert res_base.returncode == 0, res_base.stderr[-3000:]
    fb = json.loads(res_base.stdout.strip().splitlines()[-1])
    assert fb["dispatch"].endswith("runs baseline"), fb["dispatch"]
    assert fb["self_hits"] == f["self_hits"] and fb["after_delete"] == f["after_delete"]

    info = _run([str(fresh_venv / "bin" / "plaidx"), "info", str(tmp_path / "idx"), "--verify"], env, tmp_path)
    assert info.returncode == 0, f"`plaidx info` failed without torch:\n{info.stdout}\n{info.stderr[-3000:]}"
    assert "318" in info.stdout, info.stdout
