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
    with open(folder / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                corpus[str(d["_id"])] = {"title": d.get("title", ""), "text": d.get("text", "")}
    with open(folder / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                queries[str(q["_id"])] = q["text"]
    qpath = folder / "qrels" / f"{split}.tsv"
    if qpath.exists():
        with open(qpath, encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t")
            next(reader, None)
            for row in reader:
                if len(row) >= 3:
                    qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return corpus, queries, qrels


def doc_text(doc: dict) -> str:
    """Title and text joined the way the demo and benchmarks index them."""
    title = (doc.get("title") or "").strip()
    text = (doc.get("text") or "").strip()
    return f"{title}. {text}" if title else text
