"""Install by need: the engine works without torch/transformers, and each part whose extra is missing names it.

Each check runs in a fresh interpreter whose import system refuses the packages of an extra (a
``sys.meta_path`` finder that raises ModuleNotFoundError for them), as if they were not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BLOCKER = """
import importlib.abc
import sys

BLOCKED = set(sys.argv[1].split(","))


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
for name in list(sys.modules):
    assert name.split(".")[0] not in BLOCKED, name
"""


def run_blocked(blocked: str, body: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``body`` (after the blocker) in a fresh interpreter with ``blocked`` packages unimportable."""
    script = BLOCKER + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", script, blocked, *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


ENGINE_WITHOUT_TORCH = """
import json
import numpy as np
import plaidx
from plaidx.errors import MissingExtraError

rng = np.random.default_rng(0)
def doc(n):
    x = rng.standard_normal((n, 16)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)

docs = [doc(int(n)) for n in rng.integers(3, 12, size=60)]
index = plaidx.Index.build("eng", docs, nbits=2, seed=0)
index = plaidx.Index.open("eng")
scores, ids = index.search(docs[5], k=3, exact=True)
assert ids[0, 0] == 5, ids
new = index.add([doc(6), doc(7)])
assert index.delete([int(new[0]), 3]) == 2
scores, ids = index.search(np.stack([docs[5][:4], docs[7][:4]]), k=4, params=plaidx.SearchParams(nprobe=4))
assert ids.shape == (2, 4) and 3 not in ids
assert index.verify() == []
assert float(plaidx.maxsim(docs[1], [docs[1]])[0]) > 0
report = {"torch_loaded": "torch" in sys.modules, "transformers_loaded": "transformers" in sys.modules}
for what, call in (("ColBERT", lambda: plaidx.ColBERT.from_pretrained()),
                   ("RAG", lambda: plaidx.RAGPretrainedModel.from_pretrained())):
    try:
        call()
        report[what] = "no error"
    except MissingExtraError as exc:
        report[what] = str(exc)
print(json.dumps(report))
"""


def test_the_engine_works_without_torch_and_the_text_parts_name_their_extra(tmp_path):
    r = run_blocked("torch,transformers,tokenizers", ENGINE_WITHOUT_TORCH, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["torch_loaded"] is False and report["transformers_loaded"] is False
    for what in ("ColBERT", "RAG"):
        assert "pip install 'plaidx[text]'" in report[what] and "'torch'" in report[what], report[what]


def test_the_server_without_fastapi_names_the_server_extra(tmp_path):
    body = """
    from plaidx.errors import MissingExtraError
    try:
        from plaidx.server import create_app
    except MissingExtraError as exc:
        print(exc)
    """
    r = run_blocked("fastapi,uvicorn", body, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "pip install 'plaidx[server]'" in r.stdout and "'fastapi'" in r.stdout
    cli = "import sys\nfrom plaidx.cli import main\nsys.exit(main(['serve', '--index', 'nowhere']))\n"
    r = run_blocked("fastapi,uvicorn", cli, cwd=tmp_path)
    # the extra is checked before the index is opened: the message is about the extra, not the path
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "plaidx[server]" in r.stderr and "nowhere" not in r.stderr and "Traceback" not in r.stderr


def test_eval_without_ranx_names_the_eval_extra_before_any_search(tmp_path):
    missing = "ranx"
    cli = "import sys\nfrom plaidx.cli import main\nsys.exit(main(['eval', 'no-index', 'no-data']))\n"
    r = run_blocked(missing, cli, cwd=tmp_path)
    # neither the index nor the data was looked at: the missing extra is said first, not after the searches
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert "pip install 'plaidx[eval]'" in r.stderr and "'ranx'" in r.stderr, r.stderr
    assert "no-index" not in r.stderr and "no-data" not in r.stderr and "Traceback" not in r.stderr
