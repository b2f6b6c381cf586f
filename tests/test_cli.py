"""The plaidx command line: index, search, info (--verify), eval and serve's checks, through main() and -m."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from encoder_fixtures import WORDS, make_tiny_checkpoint
from synth import clustered_collection

import plaidx
from plaidx import cli

REPO = Path(__file__).resolve().parents[1]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    ckpt = make_tiny_checkpoint(root, "stanford", seed=7)
    rng = np.random.default_rng(7)
    rows = [{"_id": f"d{i}", "title": f"title {i}", "text": " ".join(rng.choice(WORDS, size=int(rng.integers(5, 45)))),
             "source": "synthetic", "n": i} for i in range(50)]
    beir = root / "beir"
    (beir / "qrels").mkdir(parents=True)
    _write_jsonl(beir / "corpus.jsonl", rows)
    # queries: the first words of a document, judged relevant to it (and to a second one, graded 2)
    qrows = [{"_id": f"q{i}", "text": " ".join(rows[i]["text"].split()[:5])} for i in range(0, 50, 5)]
    _write_jsonl(beir / "queries.jsonl", qrows + [{"_id": "unjudged", "text": "cats"}])
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(0, 50, 5)] + ["q0\td1\t2"]
    (beir / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"root": root, "ckpt": ckpt, "rows": rows, "beir": beir}


@pytest.fixture(scope="module")
def built(data):
    """`plaidx index` of the BEIR folder, run once for the module."""
    path = data["root"] / "indexes" / "sci"
    code = cli.main(["index", str(data["beir"]), str(path), "--model", str(data["ckpt"]), "--max-document-length",
                     "24", "--index-metadata", "n,source", "--quiet"])
    assert code == 0
    return path


def test_index_builds_a_rag_index_with_ids_texts_and_metadata(built, data):
    rag = plaidx.RAGPretrainedModel.from_index(built, verbose=0)
    cfg = json.loads((built / "plaidx_rag.json").read_text())
    assert cfg["model"]["name_or_path"] == str(data["ckpt"])
    store_ids = {r["document_id"] for r in rag.search("cat", k=500)}
    assert store_ids == {r["_id"] for r in data["rows"]}  # every document indexed, ids kept
    hits = rag.search(data["rows"][3]["text"], k=500, doc_ids=["d3"])
    assert {h["document_id"] for h in hits} == {"d3"}
    assert hits[0]["document_metadata"] == {"title": "title 3", "source": "synthetic", "n": 3}
    first = min(hits, key=lambda h: h["passage_id"])
    assert first["content"].startswith("title 3. ")  # the title is prepended to the text


def test_index_reports_model_nbits_and_progress(data, tmp_path, capsys):
    code, out, err = run(capsys, "index", data["beir"] / "corpus.jsonl", tmp_path / "small", "--model", data["ckpt"],
                         "--limit", "7", "--no-split", "--nbits", "4")
    assert code == 0, err
    assert f"model: {data['ckpt']} (dim 16, query length 12, document length 24)" in err
    assert "corpus: 7 documents" in err and "nbits 4" in err
    assert "indexed 7 documents as 7 passages" in out and "nbits 4" in out
    code, out, err = run(capsys, "index", data["beir"] / "corpus.jsonl", tmp_path / "pq", "--model", data["ckpt"],
                         "--limit", "7", "--no-split", "--residual-codec", "pq")
    assert code == 0, err
    code, out, err = run(capsys, "info", tmp_path / "pq")
    assert code == 0 and "residual codec" in out and "pq" in out.split("residual codec", 1)[1].splitlines()[0]


def test_index_reports_each_step_and_its_encoding_bar_moves(data, tmp_path, capsys):
    code, out, err = run(capsys, "index", data["beir"], tmp_path / "steps", "--model", data["ckpt"],
                         "--max-document-length", "24")
    assert code == 0, err
    steps = ["indexing 50 documents as", "plaidx: encoding passages", "encoded ", "k-means",
             "compressed ", "writing the document store", "ready in"]
    at = [err.find(s) for s in steps]
    assert all(i >= 0 for i in at) and at == sorted(at), (steps, at, err[-2000:])
    # the bar advances while encoding (chunks of 256 passages: 0 then the total here), not only at the end
    assert "0/" in err.split("plaidx: encoding passages", 1)[1] and "100%" in err
    code, out, err = run(capsys, "index", data["beir"], tmp_path / "steps", "--model", data["ckpt"], "--overwrite",
                         "--quiet")
    assert code == 0 and err == ""


def test_usage_errors_exit_2_with_clean_messages(built, data, tmp_path, capsys):
    def usage(*argv: str, words: tuple[str, ...]) -> str:
        code, _, err = run(capsys, *argv)
        assert code == cli.EXIT_USAGE, (argv, code, err)
        assert "Errno" not in err and "Traceback" not in err, err
        for w in words:
            assert w in err, (w, err)
        return err

    usage("search", built, "cats", "--doc-ids", "nope", words=("--doc-ids", "'nope'", "50 documents"))
    usage("search", built, "--queries-file", tmp_path / "missing.txt", words=("--queries-file", "not found"))
    usage("search", built, "cats", "--exact", "--nprobe", "4", words=("--exact", "--nprobe"))
    usage("eval", built, data["beir"], "--exact", "--ndocs", "64", "--n-exact", "8", words=("--ndocs", "--n-exact"))
    code, _, err = run(capsys, "search", built, "cats", "--rerank", "8")
    assert code == 1 and "rerank=8 needs kept vectors" in err and "Traceback" not in err
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("cats\ndogs\ncaf\u00e9 au lait\n".encode("latin-1"))
    usage("search", built, "--queries-file", latin, words=(f"{latin}:3: not UTF-8",))
    with pytest.raises(SystemExit) as e:
        cli.main(["search", str(built), "cats", "--width", "-5"])
    assert e.value.code == cli.EXIT_USAGE and "positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["search", str(built), "cats", "--rerank", "-1"])
    assert e.value.code == cli.EXIT_USAGE and "non-negative integer" in capsys.readouterr().err
    code, _, err = run(capsys, "search", built, "cats", "--rerank", "0")  # no tier, no re-scoring: fine
    assert code == 0, err
    # a byte order mark is not part of the first query
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffcats on mats\n".encode("utf-8"))
    code, out, err = run(capsys, "search", built, "--queries-file", bom, "--json", "-k", "2")
    assert code == 0, err
    assert json.loads(out)[0]["query"] == "cats on mats"
    engine = _engine_with_drift(tmp_path / "eng")
    usage("search", engine.path, "cats", "--doc-ids", "3,99999", "--model", data["ckpt"], words=("99999",))
    # --no-exact with PLAID knobs is fine
    code, _, err = run(capsys, "search", built, "cats", "--no-exact", "--nprobe", "2")
    assert code == 0, err


def test_index_encodings_paths_and_lengths(data, tmp_path, capsys):
    ck = data["ckpt"]
    rows = [{"_id": f"d{i}", "text": f"document number {i} about cats"} for i in range(4)]
    src = tmp_path / "bom.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))
    code, out, err = run(capsys, "index", src, tmp_path / "bom-index", "--model", ck, "--quiet")
    assert code == 0, err
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"_id": "a", "text": "fine"}\n{"_id": "b", "text": "caf\xe9"}\n')
    code, _, err = run(capsys, "index", bad, tmp_path / "x", "--model", ck)
    assert code == cli.EXIT_USAGE and f"{bad}:2: not UTF-8" in err and "Errno" not in err
    # an index path that cannot be created fails before the model loads (this model does not exist)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    code, _, err = run(capsys, "index", src, blocker / "idx", "--model", tmp_path / "no-such-model")
    assert code == cli.EXIT_USAGE and "cannot create the folder" in err and "no-such-model" not in err, err
    assert "Errno" not in err
    # a bad metadata field to index fails before the corpus is read and the model loads
    code, _, err = run(capsys, "index", tmp_path / "missing.jsonl", tmp_path / "y", "--model", tmp_path / "no-model",
                       "--index-metadata", 'lang,a"b')
    assert code == cli.EXIT_USAGE and "--index-metadata" in err and "double quotes" in err, err
    # a passage length above what the model reads is clamped, and says so
    code, _, err = run(capsys, "index", src, tmp_path / "long", "--model", ck, "--max-document-length", "100000")
    assert code == 0, err
    limit = plaidx.ColBERT.from_pretrained(ck).max_length
    assert f"--max-document-length 100000 is more than the {limit} tokens" in err
    cfg = json.loads((tmp_path / "long" / "plaidx_rag.json").read_text())
    assert cfg["passages"]["max_document_length"] == limit


def test_eval_against_an_index_of_another_collection_fails_loudly(data, tmp_path, capsys):
    other = _write_jsonl(tmp_path / "other.jsonl", [{"_id": f"other-{i}", "text": " ".join(WORDS[i:i + 8])}
                                                    for i in range(12)])
    code, _, err = run(capsys, "index", other, tmp_path / "other-index", "--model", data["ckpt"], "--quiet")
    assert code == 0, err
    code, out, err = run(capsys, "eval", tmp_path / "other-index", data["beir"])
    assert code == cli.EXIT_FAILURE and "not built from this collection" in err and "ndcg@10" in out


def test_index_keep_vectors_builds_the_rerank_tier(data, tmp_path, capsys):
    rows = [{"_id": f"d{i}", "text": r["text"]} for i, r in enumerate(data["rows"][:20])]
    src = _write_jsonl(tmp_path / "c.jsonl", rows)
    code, _, err = run(capsys, "index", src, tmp_path / "tier", "--model", data["ckpt"], "--keep-vectors", "int8", "-q")
    assert code == 0, err
    code, out, _ = run(capsys, "info", tmp_path / "tier")
    assert code == 0 and "kept vectors" in out and "int8" in out
    assert json.loads(run(capsys, "info", tmp_path / "tier", "--json")[1])["keep_vectors"] == "int8"
    code, out, err = run(capsys, "search", tmp_path / "tier", rows[3]["text"], "--rerank", "8", "--no-exact", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["results"][0]["document_id"] == "d3"
    with pytest.raises(SystemExit) as e:
        cli.main(["index", str(src), str(tmp_path / "x"), "--keep-vectors", "int4"])
    assert e.value.code == cli.EXIT_USAGE and "invalid choice" in capsys.readouterr().err


def test_index_from_a_folder_of_text_files(data, tmp_path, capsys):
    src = tmp_path / "notes"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("the cat sat on the mat", encoding="utf-8")
    (src / "sub" / "b.md").write_text("late interaction search with an index", encoding="utf-8")
    (src / "empty.txt").write_text("   ", encoding="utf-8")
    (src / "skip.bin").write_bytes(b"\x00\x01")
    code, out, err = run(capsys, "index", src, tmp_path / "notes-index", "--model", data["ckpt"])
    assert code == 0, err
    assert "empty.txt is empty; skipped" in err
    code, out, err = run(capsys, "search", tmp_path / "notes-index", "late interaction", "-k", "5", "--json")
    assert code == 0, err
    (result,) = json.loads(out)
    assert {h["document_id"] for h in result["results"]} == {"a.txt", "sub/b.md"}
    assert {h["document_metadata"]["path"] for h in result["results"]} == {"a.txt", "sub/b.md"}
    (src / "sub dir").mkdir()
    (src / "sub dir" / "my notes, v2.txt").write_text("late interaction notes", encoding="utf-8")
    code, _, err = run(capsys, "index", src, tmp_path / "notes-index", "--model", data["ckpt"], "--overwrite", "-q")
    assert code == 0, err
    for ids in (["--doc-ids", '["sub dir/my notes, v2.txt"]'], ["--doc-ids", "a.txt, sub/b.md"]):
        code, out, err = run(capsys, "search", tmp_path / "notes-index", "late interaction", "-k", "5", "--json", *ids)
        assert code == 0, err  # ids hold spaces and commas: split on commas only, or given as a JSON list
        got = {h["document_id"] for h in json.loads(out)[0]["results"]}
        assert got == ({"sub dir/my notes, v2.txt"} if ids[1].startswith("[") else {"a.txt", "sub/b.md"})
    code, _, err = run(capsys, "search", tmp_path / "notes-index", "x", "--doc-ids", '["a.txt", 1.5]')
    assert code == cli.EXIT_USAGE and "JSON list of ids must hold strings or integers" in err
    code, _, err = run(capsys, "search", tmp_path / "notes-index", "x", "--doc-ids", '["a.txt", ')
    assert code == cli.EXIT_USAGE and "starts with '[' but is not a JSON list" in err


def test_search_table_json_and_filters_equal_the_library(built, data, capsys):
    rag = plaidx.RAGPretrainedModel.from_index(built, verbose=0)
    q = "what is the best query for this index"
    code, out, err = run(capsys, "search", built, q, "the cat sat", "-k", "4", "--json")
    assert code == 0, err
    first, second = json.loads(out)
    assert first["query"] == q and second["query"] == "the cat sat"
    for got, want in ((first["results"], rag.search(q, k=4)), (second["results"], rag.search("the cat sat", k=4))):
        assert [h["passage_id"] for h in got] == [w["passage_id"] for w in want]
        np.testing.assert_allclose([h["score"] for h in got], [w["score"] for w in want], rtol=1e-5)
        assert [h["content"] for h in got] == [w["content"] for w in want]
    long_q = " ".join([q] * 8)  # read whole, as the library reads it, not cut at the model's query length
    code, out, _ = run(capsys, "search", built, long_q, "-k", "4", "--json")
    assert code == 0
    got, want = json.loads(out)[0]["results"], rag.search(long_q, k=4)
    assert [h["passage_id"] for h in got] == [w["passage_id"] for w in want]
    np.testing.assert_allclose([h["score"] for h in got], [w["score"] for w in want], rtol=1e-5)
    code, out, _ = run(capsys, "search", built, q, "-k", "3", "--doc-ids", "d1,d2", "--doc-ids", "d9", "--json",
                       "--nprobe", "8", "--ndocs", "64")
    assert code == 0
    got = json.loads(out)[0]["results"]
    want = rag.search(q, k=3, doc_ids=["d1", "d2", "d9"], nprobe=8, ndocs=64)
    assert [h["passage_id"] for h in got] == [w["passage_id"] for w in want]
    assert {h["document_id"] for h in got} <= {"d1", "d2", "d9"}
    # a metadata filter, alone and with --doc-ids; a bad one is a usage error naming the problem
    where = '{"n": {"$lt": 10}}'
    code, out, _ = run(capsys, "search", built, q, "-k", "5", "--where", where, "--json")
    got = json.loads(out)[0]["results"]
    want = rag.search(q, k=5, where={"n": {"$lt": 10}})
    assert code == 0 and [h["passage_id"] for h in got] == [w["passage_id"] for w in want]
    assert {h["document_id"] for h in got} <= {f"d{i}" for i in range(10)}
    code, out, _ = run(capsys, "search", built, q, "-k", "50", "--where", where, "--doc-ids", "d3,d30", "--json")
    assert code == 0 and {h["document_id"] for h in json.loads(out)[0]["results"]} == {"d3"}
    code, _, err = run(capsys, "search", built, q, "--where", "{n: 1}")
    assert code == 2 and "--where: not JSON" in err
    code, _, err = run(capsys, "search", built, q, "--where", '{"n": {"$like": 1}}')
    assert code == 2 and "unknown operator" in err
    code, out, err = run(capsys, "search", built, q, "-k", "2", "--width", "30")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"query: {q}" and lines[1].split()[0] == "1" and lines[2].split()[0] == "2"
    assert max(len(line) for line in lines[1:3]) <= 30 + 50
    assert "searched in" in err


def test_search_errors_are_actionable(built, data, tmp_path, capsys):
    code, _, err = run(capsys, "search", built)
    assert code == cli.EXIT_USAGE and "at least one non-empty query" in err
    code, _, err = run(capsys, "search", tmp_path / "nothing", "cats")
    assert code == cli.EXIT_USAGE and "no such index folder" in err
    code, _, err = run(capsys, "search", built, "cats", "--doc-ids", "ghost")
    assert code == cli.EXIT_USAGE and "'ghost'" in err
    code, _, err = run(capsys, "search", built, "cats", "-k", "0")
    assert code == cli.EXIT_USAGE and "-k" in err
    not_index = tmp_path / "plain"
    not_index.mkdir()
    code, _, err = run(capsys, "search", not_index, "cats")
    assert code == cli.EXIT_USAGE and "is not a plaidx index" in err
    code, _, err = run(capsys, "search", built.parent, "cats")
    assert code == cli.EXIT_USAGE and "folder of indexes (sci)" in err


def test_info_on_a_rag_folder_and_on_a_bare_engine(built, data, capsys):
    code, out, err = run(capsys, "info", built, "--json")
    assert code == 0, err
    info = json.loads(out)
    engine = plaidx.Index.open(built / "engine")
    e = engine.info()
    assert info["kind"] == "rag" and info["documents"] == 50 and info["passages"] == len(engine)
    for key in ("tokens", "nlist", "nbits", "dim", "format_version", "generation"):
        assert info[key] == e[key], key
    assert info["model"] == str(data["ckpt"]) and info["document_length"] == 24
    assert info["bytes_on_disk"] > e["bytes_on_disk"]  # the document store counts too
    code, out, _ = run(capsys, "info", built)
    assert code == 0
    table = dict(line.split(None, 1) if "  " not in line else [p.strip() for p in line.split("  ", 1)]
                 for line in out.splitlines())
    assert table["documents"] == "50" and table["dim"] == "16"
    assert table["nbits"] == f"{e['nbits']} (the default for RAG indexes; plaidx index --nbits N chooses)"
    assert info["index_config"]["nbits_chosen"] == "default"
    assert table["model"] == str(data["ckpt"]) and table["format version"] == str(e["format_version"]) == "3"
    assert info["metadata_indexes"] == ["n", "source"] and table["metadata indexes"] == "n, source"
    code, out, _ = run(capsys, "info", built / "engine", "--json")
    bare = json.loads(out)
    assert code == 0 and bare["kind"] == "engine" and bare["documents"] == bare["passages"] == len(engine)
    assert bare["bytes_on_disk"] == e["bytes_on_disk"] and bare["model"] is None


def _engine_with_drift(path: Path) -> plaidx.Index:
    docs, _, _ = clustered_collection(n_docs=120, dim=16, n_topics=6, mean_len=10, seed=2, noise=0.1)
    index = plaidx.Index.build(path, docs, nbits=2, seed=0)
    rng = np.random.default_rng(3)
    far = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in
           (rng.standard_normal((10, 16)).astype(np.float32) for _ in range(60))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        index.add(far)
    return index


def test_info_verify_passes_shows_drift_and_fails_on_damage(tmp_path, capsys):
    index = _engine_with_drift(tmp_path / "eng")
    drift = index.drift()
    assert drift["recommend_recluster"]
    code, out, err = run(capsys, "info", tmp_path / "eng", "--verify")
    assert code == 0, err
    assert "verify: OK" in out
    assert f"ratio {drift['ratio']:.2f}" in out and "recluster" in err
    code, out, _ = run(capsys, "info", tmp_path / "eng", "--verify", "--json")
    assert code == 0 and json.loads(out)["problems"] == [] and json.loads(out)["drift"]["ratio"] == drift["ratio"]
    # flip one byte of the residuals: only a full checksum pass can see it
    manifest = json.loads((tmp_path / "eng" / "manifest.json").read_text())
    target = tmp_path / "eng" / manifest["arrays"]["residuals"]["file"]
    raw = bytearray(target.read_bytes())
    raw[-5] ^= 0xFF
    target.write_bytes(bytes(raw))
    code, out, err = run(capsys, "info", tmp_path / "eng", "--verify")
    assert code == cli.EXIT_FAILURE
    assert "1 problem found" in err and "residuals" in err
    code, out, err = run(capsys, "info", tmp_path / "eng", "--verify", "--json")
    assert code == cli.EXIT_FAILURE and len(json.loads(out)["problems"]) == 1
    # a manifest that cannot be read at all is a problem too, not a traceback
    (tmp_path / "eng" / "manifest.json").write_text("{not json", encoding="utf-8")
    code, out, err = run(capsys, "info", tmp_path / "eng", "--verify")
    assert code == cli.EXIT_FAILURE and "cannot open the index" in err
    code, out, err = run(capsys, "info", tmp_path / "eng")
    assert code == cli.EXIT_FAILURE and "plaidx info: error:" in err and "Traceback" not in err


def test_info_verify_checks_the_document_store_against_the_engine(data, tmp_path, capsys):
    import sqlite3

    code, _, err = run(capsys, "index", data["beir"], tmp_path / "copy", "--model", data["ckpt"], "--limit", "6",
                       "--quiet")
    assert code == 0, err
    code, out, _ = run(capsys, "info", tmp_path / "copy", "--verify")
    assert code == 0 and "verify: OK" in out
    con = sqlite3.connect(tmp_path / "copy" / "docstore.sqlite")
    with con:
        con.execute("PRAGMA foreign_keys=OFF")
        con.execute("DELETE FROM passages WHERE passage_id = (SELECT MAX(passage_id) FROM passages)")
    con.close()
    code, out, err = run(capsys, "info", tmp_path / "copy", "--verify")
    assert code == cli.EXIT_FAILURE and "disagree" in err


def test_eval_scores_the_run_with_ranx(built, data, capsys):
    code, out, err = run(capsys, "eval", built, data["beir"], "--json", "-k", "20")
    assert code == 0, err
    report = json.loads(out)
    assert report["queries"] == 10 and set(report["metrics"]) == {"ndcg@10", "recall@100", "mrr@10"}
    # the same run built from the library, scored by the same ranx call
    rag = plaidx.RAGPretrainedModel.from_index(built, verbose=0)
    from plaidx.rag.sample import load_beir

    _, queries, qrels = load_beir(data["beir"])
    qids = [q for q in queries if q in qrels]
    run_ = {}
    for q in qids:
        best: dict[str, float] = {}
        for h in rag.search(queries[q], k=20):
            best[h["document_id"]] = max(best.get(h["document_id"], -1e9), h["score"])
        run_[q] = best
    want = cli.evaluate(qrels, run_, qids)
    for m, v in want.items():
        assert report["metrics"][m] == pytest.approx(v, abs=1e-6)
    code, out, _ = run(capsys, "eval", built, data["beir"])
    assert code == 0 and "ndcg@10" in out and "recall@100" in out and "mrr@10" in out


def test_evaluate_matches_hand_computed_values():
    qrels = {"a": {"x": 1, "y": 2}, "b": {"z": 1}}
    run_ = {"a": {"w": 3.0, "y": 2.0, "x": 1.0}, "b": {}}
    m = cli.evaluate(qrels, run_, ["a", "b"])
    # query a: y (grade 2) at rank 2, x (grade 1) at rank 3; ideal: y then x. Linear gains, as trec_eval and
    # BEIR's pytrec_eval compute nDCG. Query b has no results and counts 0.
    dcg = 2 / np.log2(3) + 1 / np.log2(4)
    idcg = 2 / np.log2(2) + 1 / np.log2(3)
    assert m["ndcg@10"] == pytest.approx(dcg / idcg / 2, rel=1e-9)
    assert m["recall@100"] == pytest.approx(0.5)
    assert m["mrr@10"] == pytest.approx(0.25)


def test_eval_errors(built, data, tmp_path, capsys):
    code, _, err = run(capsys, "eval", built, tmp_path)
    assert code == cli.EXIT_USAGE and "not a BEIR folder" in err
    code, _, err = run(capsys, "eval", built, data["beir"], "--split", "dev")
    assert code == cli.EXIT_USAGE and "dev.tsv not found" in err
    # eval reads queries and qrels only (the corpus is the index's), and a qrels file without a header loses no line
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_bytes(b"\xef\xbb\xbf{not json at all\n")
    (beir / "queries.jsonl").write_text((data["beir"] / "queries.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    lines = (data["beir"] / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    (beir / "qrels" / "test.tsv").write_text("\n".join(lines[1:]) + "\n", encoding="utf-8")  # no header
    code, out, err = run(capsys, "eval", built, beir, "--json", "-k", "20")
    assert code == 0, err
    code, want, err = run(capsys, "eval", built, data["beir"], "--json", "-k", "20")
    assert json.loads(out)["queries"] == json.loads(want)["queries"] == 10
    assert json.loads(out)["metrics"] == json.loads(want)["metrics"]
    (beir / "qrels" / "test.tsv").write_text("q0\td0\t1\nq5\td5\tabc\n", encoding="utf-8")
    code, _, err = run(capsys, "eval", built, beir)
    assert code == cli.EXIT_USAGE and "test.tsv:2: the grade 'abc' is not an integer" in err


def test_index_input_errors(data, tmp_path, capsys):
    ck = data["ckpt"]
    code, _, err = run(capsys, "index", tmp_path / "missing.jsonl", tmp_path / "i", "--model", ck)
    assert code == cli.EXIT_USAGE and "not found" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a", "text": "fine"}\n{"_id": "b", "text": \n', encoding="utf-8")
    code, _, err = run(capsys, "index", bad, tmp_path / "i", "--model", ck)
    assert code == cli.EXIT_USAGE and f"{bad}:2: invalid JSON" in err
    _write_jsonl(bad, [{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}])
    code, _, err = run(capsys, "index", bad, tmp_path / "i", "--model", ck)
    assert code == cli.EXIT_USAGE and "duplicate document id 'a'" in err
    _write_jsonl(bad, [{"_id": "a", "body": "x"}])
    code, _, err = run(capsys, "index", bad, tmp_path / "i", "--model", ck)
    assert code == cli.EXIT_USAGE and "--text-field" in err
    code, _, err = run(capsys, "index", bad, tmp_path / "i", "--model", ck, "--text-field", "body", "--quiet")
    assert code == 0, err
    code, _, err = run(capsys, "index", bad, tmp_path / "i", "--model", ck, "--text-field", "body")
    assert code == cli.EXIT_USAGE and "--overwrite" in err
    code, _, err = run(capsys, "index", bad, tmp_path / "i", "--model", ck, "--text-field", "body", "--overwrite",
                       "--quiet")
    assert code == 0, err
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("precious", encoding="utf-8")
    code, _, err = run(capsys, "index", bad, other, "--model", ck, "--text-field", "body", "--overwrite")
    assert code == cli.EXIT_USAGE and "is not a plaidx index" in err
    assert (other / "keep.txt").read_text() == "precious"  # never replaced
    code, _, err = run(capsys, "index", bad, tmp_path / "bad name!", "--model", ck)
    assert code == cli.EXIT_USAGE and "letters, digits" in err
    nan = tmp_path / "nan.jsonl"
    nan.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y", "score": NaN}\n', encoding="utf-8")
    code, _, err = run(capsys, "index", nan, tmp_path / "n", "--model", ck)
    assert code == cli.EXIT_USAGE and f"{nan}:2: invalid JSON (NaN is not JSON" in err
    # too many shards for the corpus: refused before the index it would replace is touched
    def files():  # the index's files (SQLite's -wal/-shm come and go with its connections)
        return sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "i").rglob("*")
                      if not p.name.endswith(("-wal", "-shm")))

    before = files()
    code, _, err = run(capsys, "index", bad, tmp_path / "i", "--model", ck, "--text-field", "body", "--overwrite",
                       "--shards", "4")
    assert code == cli.EXIT_USAGE and "--shards 4: the corpus holds 1 documents" in err
    assert files() == before
    code, _, err = run(capsys, "search", tmp_path / "i", "x", "--model", "no/such-model")
    assert code == cli.EXIT_USAGE and "no/such-model" in err
    for bad_value in ("nan", "inf"):
        with pytest.raises(SystemExit) as e:
            cli.main(["search", str(tmp_path / "i"), "x", "--centroid-score-threshold", bad_value])
        assert e.value.code == cli.EXIT_USAGE and "finite number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["search", str(tmp_path / "i"), "x", "--ndocs", str(1 << 63)])
    assert e.value.code == cli.EXIT_USAGE and "up to 2147483647" in capsys.readouterr().err


def test_help_usage_and_module_entry_point(capsys):
    for command in ("index", "search", "info", "eval", "serve"):
        with pytest.raises(SystemExit) as e:
            cli.main([command, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: plaidx {command}" in out and "exit codes" in out
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == cli.EXIT_USAGE
    assert cli.main([]) == cli.EXIT_USAGE
    with pytest.raises(SystemExit) as e:
        cli.main(["index", "corpus.jsonl", "out", "--nbits", "3"])
    assert e.value.code == cli.EXIT_USAGE and "invalid choice" in capsys.readouterr().err
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "plaidx", "--version"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"plaidx {plaidx.__version__}"
    r = subprocess.run([sys.executable, "-m", "plaidx", "info", "/nonexistent/index"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == cli.EXIT_USAGE and "plaidx info: error:" in r.stderr and "no such index" in r.stderr
