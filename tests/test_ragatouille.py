"""RAGatouille folders opened by RAGPretrainedModel.from_index: converted beside the source, never written to.

The fixture (tests/fixtures/ragatouille, made by benchmarks/peers/make_ragatouille_fixture.py) is a real
RAGatouille 0.0.9.post2 index of 48 SciFact passages, RAGatouille's own answers for three queries and
colbert-ai's own vectors, all from a Stanford checkpoint that is rebuilt here from the bundled MiniLM.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from plaidx.encoder import ColBERT  # noqa: E402
from plaidx.errors import CheckpointError, IndexFormatError, PlaidxError  # noqa: E402
from plaidx.rag import RAGPretrainedModel  # noqa: E402
from plaidx.rag.ragatouille import converted_path, fingerprint, open_ragatouille  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "ragatouille"
ANSWERS = json.loads((FIXTURE / "answers.json").read_text(encoding="utf-8"))
NAME = ANSWERS["index_name"]
KEYS = {"content", "score", "rank", "document_id", "passage_id", "document_metadata"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """The checkpoint the fixture was made with (same seed, same bytes), ~90 MB, made here."""
    spec = importlib.util.spec_from_file_location("make_stanford_checkpoint",
                                                  ROOT / "benchmarks" / "peers" / "make_stanford_checkpoint.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path = tmp_path_factory.getbasetemp() / "minilm-colbert-seed0"  # shared with test_encoder_adapters.py
    if not (path / "model.safetensors").is_file():
        mod.make_checkpoint(path, seed=0)
    return path


def _copy(tmp_path: Path, checkpoint) -> Path:
    """The fixture index under tmp_path/.ragatouille/colbert/indexes/NAME, its metadata naming ``checkpoint``."""
    src = tmp_path / ".ragatouille" / "colbert" / "indexes" / NAME
    shutil.copytree(FIXTURE / "colbert" / "indexes" / NAME, src)
    meta = json.loads((src / "metadata.json").read_text())
    meta["config"]["checkpoint"] = str(checkpoint)
    (src / "metadata.json").write_text(json.dumps(meta))
    return src


def _hashes(folder: Path) -> dict[str, str]:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture()
def source(tmp_path, checkpoint):
    return _copy(tmp_path, checkpoint)


def test_plaidx_encodes_the_stanford_checkpoint_as_colbert_ai_does(checkpoint):
    ref = np.load(FIXTURE / "encoder.npz")
    doc_maxlen = json.loads((FIXTURE / "colbert" / "indexes" / NAME / "metadata.json").read_text())["config"]["doc_maxlen"]
    model = ColBERT.from_pretrained(checkpoint, device="cpu", document_length=doc_maxlen)
    # observed here: bit-identical (max difference 0.0) for queries and documents
    np.testing.assert_allclose(model.encode_queries(ANSWERS["queries"]), ref["queries"], atol=2e-5)
    texts = json.loads((FIXTURE / "colbert" / "indexes" / NAME / "collection.json").read_text())
    docs = model.encode_documents([texts[int(p)] for p in ref["doc_pids"]])
    assert [d.shape[0] for d in docs] == ref["doc_lens"].tolist()
    np.testing.assert_allclose(np.concatenate(docs), ref["docs"], atol=2e-5)


def test_from_index_answers_like_ragatouille_and_never_writes_the_source(source, capsys):
    before = _hashes(source)
    rag = RAGPretrainedModel.from_index(source, verbose=1)
    dst = converted_path(source)
    assert dst == source.parent / f"{NAME}.plaidx" and dst.is_dir()
    assert str(dst) in capsys.readouterr().err  # says where the converted folder is
    overlaps = []
    for query, expected in zip(ANSWERS["queries"], ANSWERS["answers"]):
        got = rag.search(query, k=ANSWERS["k"])
        assert len(got) == len(expected)
        assert all(set(r) == KEYS for r in got)  # every fixture document has metadata
        assert [r["rank"] for r in got] == [r["rank"] for r in expected]
        ours = {r["passage_id"]: r for r in got}
        for e in expected:
            if e["passage_id"] in ours:
                r = ours[e["passage_id"]]
                assert (r["content"], r["document_id"], r["document_metadata"]) == (
                    e["content"], e["document_id"], e["document_metadata"])
                assert r["score"] == pytest.approx(e["score"], rel=1e-3)  # same vectors, same query encoding
        overlaps.append(len(set(ours) & {e["passage_id"] for e in expected}) / len(expected))
        assert got[0]["passage_id"] == expected[0]["passage_id"]
    # plaidx scores this small index exhaustively, RAGatouille with PLAID: observed overlap 1.0 on all three
    # queries, the same order, scores within 2e-6
    assert min(overlaps) >= 0.8, overlaps
    # RAGatouille code names the index by its folder's name: that reaches the conversion, never the source
    by_name = rag.search(ANSWERS["queries"][0], index_name=NAME, k=ANSWERS["k"])
    assert by_name == rag.search(ANSWERS["queries"][0], k=ANSWERS["k"]) and rag.index_name == NAME
    assert _hashes(source) == before


def test_a_second_open_reuses_the_conversion_and_a_changed_source_is_converted_again(source, capsys):
    RAGPretrainedModel.from_index(source, verbose=1)
    dst = converted_path(source)
    inode = dst.stat().st_ino
    capsys.readouterr()
    again = RAGPretrainedModel.from_index(source, verbose=1)
    assert dst.stat().st_ino == inode and "using the plaidx conversion" in capsys.readouterr().err
    assert again.search(ANSWERS["queries"][0], k=1)[0]["passage_id"] == ANSWERS["answers"][0][0]["passage_id"]
    # RAGatouille rewrites its maps (here: one metadata changed); the unmodified conversion is replaced
    meta_file = source / "docid_metadata_map.json"
    metas = json.loads(meta_file.read_text())
    first = ANSWERS["answers"][0][0]["document_id"]
    metas[first] = {"edited": True}
    meta_file.write_text(json.dumps(metas))
    rag = RAGPretrainedModel.from_index(source, verbose=0)
    assert dst.stat().st_ino != inode
    assert rag.search(ANSWERS["queries"][0], k=1)[0]["document_metadata"] == {"edited": True}


def test_a_conversion_written_to_by_plaidx_is_never_replaced(source):
    rag = RAGPretrainedModel.from_index(source, verbose=0)
    rag.add_to_index(["A new passage about stem cells in bone marrow."], new_document_ids=["new-1"],
                     split_documents=False)
    (source / "collection.json").write_text((source / "collection.json").read_text())  # touched: changed
    with pytest.raises(PlaidxError, match="written to by plaidx"):
        RAGPretrainedModel.from_index(source, verbose=0)
    kept = RAGPretrainedModel.from_index(converted_path(source), verbose=0)  # opening it directly works
    assert kept.search("stem cells in bone marrow", k=1, doc_ids=["new-1"])[0]["document_id"] == "new-1"


def test_a_checkpoint_that_is_not_here_is_a_clear_error_and_model_fixes_it(tmp_path, checkpoint):
    src = _copy(tmp_path, tmp_path / "gone" / "colbertv2.0")
    with pytest.raises(CheckpointError, match=r"not on this machine.*model="):
        RAGPretrainedModel.from_index(src, verbose=0)
    assert not converted_path(src).exists()  # nothing written before the model is known
    rag = RAGPretrainedModel.from_index(src, verbose=0, model=str(checkpoint))
    assert rag.search(ANSWERS["queries"][1], k=1)[0]["passage_id"] == ANSWERS["answers"][1][0]["passage_id"]
    # the model given at conversion is recorded: the next open needs no model=
    again = RAGPretrainedModel.from_index(src, verbose=0)
    assert again.model.name_or_path == str(checkpoint)


def test_a_model_of_the_wrong_dimension_is_refused(source):
    with pytest.raises(ValueError, match="128-d vectors"):
        RAGPretrainedModel.from_index(source, verbose=0, model=ColBERT.from_pretrained(device="cpu"))


def test_folders_of_other_kinds_and_inconsistent_maps_are_clear_errors(tmp_path, source):
    bare = tmp_path / "bare"
    shutil.copytree(source, bare)
    (bare / "collection.json").unlink()
    with pytest.raises(IndexFormatError, match="convert_colbert"):
        RAGPretrainedModel.from_index(bare, verbose=0)
    short = tmp_path / "short"
    shutil.copytree(source, short)
    texts = json.loads((short / "collection.json").read_text())
    (short / "collection.json").write_text(json.dumps(texts[:-5]))
    with pytest.raises(IndexFormatError, match="inconsistent"):
        RAGPretrainedModel.from_index(short, verbose=0)
    occupied = tmp_path / "occupied"
    shutil.copytree(source, occupied)
    converted_path(occupied).mkdir()
    (converted_path(occupied) / "notes.txt").write_text("mine")
    with pytest.raises(IndexFormatError, match="not a plaidx RAG folder"):
        RAGPretrainedModel.from_index(occupied, verbose=0)
    assert (converted_path(occupied) / "notes.txt").read_text() == "mine"


def test_open_ragatouille_can_convert_elsewhere_and_fingerprints_the_source(tmp_path, source, checkpoint):
    fp = fingerprint(source)
    dst, enc = open_ragatouille(source, dst=tmp_path / "elsewhere", verbose=0)
    assert dst == tmp_path / "elsewhere" and (dst / "plaidx_rag.json").is_file() and enc.dim == 128
    rec = json.loads((dst / "plaidx_rag.json").read_text())["source"]
    assert rec["format"] == "ragatouille" and rec["fingerprint"] == fp and rec["passages"] == 48
    with pytest.raises(ValueError, match="outside the RAGatouille folder"):
        open_ragatouille(source, dst=source / "inside", verbose=0)


class _Payload:
    """Pickles as a call to os.system: what a hostile .pt file would hold."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_pt_file_in_a_ragatouille_folder_runs_nothing(tmp_path, source):
    import torch

    marker = tmp_path / "ran"
    torch.save({"centroids": _Payload(marker)}, source / "centroids.pt")
    with pytest.raises(IndexFormatError):
        RAGPretrainedModel.from_index(source, verbose=0)
    assert not marker.exists() and not converted_path(source).exists()
