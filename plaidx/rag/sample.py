"""The bundled sample collection (300 SciFact abstracts, 50 claims, judgments) and a BEIR-layout reader."""

from __future__ import annotations

import csv
import json
from pathlib import Path

SAMPLE_DIR = Path(__file__).parent.parent / "data" / "sample"


def load_beir(folder: str | Path = SAMPLE_DIR, split: str = "test") -> tuple[dict, dict, dict]:
    """Read a BEIR-layout folder.

    Returns
    -------
    corpus : {doc_id: {"title", "text"}}, queries : {query_id: text}, qrels : {query_id: {doc_id: grade}}
    """
    folder = Path(folder)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).exists():
            raise FileNotFoundError(f"{folder / name} is missing; expected a BEIR folder with corpus.jsonl, "
                                    "queries.jsonl and qrels/<split>.tsv")
    corpus, queries, qrels = {}, {}, {}
    with open(folder / "corpus.jsonl", encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                corpus[str(d["_id"])] = {"title": d.get("title", ""), "text": d.get("text", "")}
    with open(folder / "queries.jsonl", encoding="utf-8-sig") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                queries[str(q["_id"])] = q["text"]
    qpath = folder / "qrels" / f"{split}.tsv"
    if qpath.exists():
        qrels = read_qrels(qpath)
    return corpus, queries, qrels


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """A BEIR qrels TSV (query id, document id, integer grade) as {query_id: {doc_id: grade}}. The first line is
    skipped when it is a header (its grade is not an integer); a bad grade elsewhere is a ValueError naming the
    file and line."""
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        for line_no, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if len(row) < 3:
                continue
            try:
                grade = int(row[2])
            except ValueError:
                if line_no == 1:  # "query-id  corpus-id  score"
                    continue
                raise ValueError(f"{path}:{line_no}: the grade {row[2]!r} is not an integer") from None
            qrels.setdefault(row[0], {})[row[1]] = grade
    return qrels


def doc_text(doc: dict) -> str:
    """Title and text joined the way the demo and benchmarks index them."""
    title = (doc.get("title") or "").strip()
    text = (doc.get("text") or "").strip()
    return f"{title}. {text}" if title else text
