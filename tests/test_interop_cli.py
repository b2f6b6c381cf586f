"""`plaidx import colbert|fastplaid|pylate`: conversions from the command line, and their errors' exit codes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from plaidx import cli
from plaidx.engine import Index

FIXTURES = Path(__file__).parent / "fixtures" / "interop"


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_import_colbert_reports_and_writes_the_index(tmp_path, capsys):
    code, out, err = run(capsys, "import", "colbert", FIXTURES / "colbert_d128_b2" / "index", tmp_path / "a", "-q")
    assert code == 0, err
    assert "62 documents (2 removed in the source" in out and "fixture/synthetic-no-model" in out
    index = Index.open(tmp_path / "a")
    assert len(index) == 62 and index.nbits == 2 and index.metadata["source"]["format"] == "colbert-ai"
    code, _, err = run(capsys, "import", "colbert", FIXTURES / "colbert_d128_b2" / "index", tmp_path / "a", "-q")
    assert code == 2 and "not empty" in err
    code, _, err = run(capsys, "import", "colbert", FIXTURES / "colbert_d128_b2" / "index", tmp_path / "a", "-q",
                       "--overwrite")
    assert code == 0, err


def test_import_fastplaid_and_pylate(tmp_path, capsys):
    code, out, err = run(capsys, "import", "fastplaid", FIXTURES / "fastplaid_d96_b2" / "index", tmp_path / "f", "-q")
    assert code == 0, err
    peer = np.load(FIXTURES / "fastplaid_d96_b2" / "peer.npz")
    assert len(Index.open(tmp_path / "f")) == len(peer["doclens"])
    code, out, err = run(capsys, "import", "pylate", FIXTURES / "fastplaid_d96_b2" / "index", tmp_path / "p", "-q")
    assert code == 0, err


def test_wrong_kind_is_a_usage_error_and_damage_a_failure(tmp_path, capsys):
    code, _, err = run(capsys, "import", "fastplaid", FIXTURES / "colbert_d96_b4" / "index", tmp_path / "x")
    assert code == 2 and "plaidx import colbert" in err
    code, _, err = run(capsys, "import", "colbert", FIXTURES / "fastplaid_d96_b2" / "index", tmp_path / "x")
    assert code == 2 and "plaidx import fastplaid" in err
    code, _, err = run(capsys, "import", "colbert", tmp_path / "missing", tmp_path / "x")
    assert code == 2 and "no such index folder" in err
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / "colbert_d96_b4" / "index", src)
    (src / "0.residuals.pt").write_bytes((src / "0.residuals.pt").read_bytes()[:1000])
    code, _, err = run(capsys, "import", "colbert", src, tmp_path / "y")
    assert code == 1 and "truncated" in err and "nothing was written" in err
    assert not (tmp_path / "y" / "manifest.json").exists()
    src2 = tmp_path / "same"
    shutil.copytree(FIXTURES / "colbert_d96_b4" / "index", src2)
    code, _, err = run(capsys, "import", "colbert", src2, src2, "--overwrite")
    assert code == 2 and "is the source itself" in err
    rag = tmp_path / "rag"
    rag.mkdir()
    (rag / "plaidx_rag.json").write_text("{}")
    code, _, err = run(capsys, "import", "colbert", src2, rag, "--overwrite")
    assert code == 2 and "is a RAG index folder" in err and (rag / "plaidx_rag.json").exists()
