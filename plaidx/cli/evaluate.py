"""``plaidx eval``: search the judged queries of a BEIR folder and score the run (nDCG@10, recall@100, MRR@10)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import numpy as np

from ..rag import IndexFolder
from .corpus import _jsonl_file
from .errors import EXIT_FAILURE, EXIT_OK, CliError
from .folders import load_model, open_folder, search_params


def cmd_eval(args: argparse.Namespace) -> int:
    from ..errors import MissingExtraError, require

    try:  # before any search: a missing ranx must not cost the whole run
        require("ranx", "eval", "plaidx eval")
    except MissingExtraError as exc:
        raise CliError(str(exc), EXIT_FAILURE) from None
    data = Path(args.data)
    if not (data / "queries.jsonl").is_file():
        raise CliError(f"{str(data)!r} is not a BEIR folder: it needs queries.jsonl and qrels/{args.split}.tsv")
    if not (data / "qrels" / f"{args.split}.tsv").is_file():
        raise CliError(f"{data / 'qrels' / (args.split + '.tsv')} not found; pick the split with --split")
    queries, qrels = _load_queries_qrels(data, args.split)  # the corpus is the index's: not read here
    qids = [q for q in queries if q in qrels and any(g > 0 for g in qrels[q].values())]
    if args.limit_queries:
        qids = qids[: args.limit_queries]
    if not qids:
        raise CliError(f"no query of {data / 'queries.jsonl'} has a positive judgment in the {args.split} qrels")
    how = search_params(args)
    folder = open_folder(args.index)
    try:
        model = load_model(args.model, folder, args.device)
        from ..rag.queries import encode_queries

        q = encode_queries(model, [queries[i] for i in qids])
        t0 = time.perf_counter()
        results = folder.search(q, args.k, **how)
        dt = time.perf_counter() - t0
        names = _engine_doc_names(folder)
    finally:
        folder.close()
    run: dict[str, dict[str, float]] = {}
    for qid, hits in zip(qids, results):
        best: dict[str, float] = {}
        for h in hits:  # a document's score is its best passage's
            doc = str(h.document_id) if names is None else names.get(h.passage_id, str(h.passage_id))
            best[doc] = max(best.get(doc, -np.inf), h.score)
        run[qid] = best
    metrics = evaluate(qrels, run, qids)
    report = {"index": str(args.index), "data": str(data), "split": args.split, "queries": len(qids),
              "k": args.k, "metrics": metrics, "search_ms_per_query": 1000 * dt / len(qids)}
    retrieved = {d for r in run.values() for d in r}
    judged = {d for q in qids for d in qrels[q]}
    report["retrieved_documents_judged"] = len(retrieved & judged)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{len(qids)} queries, k={args.k}, {report['search_ms_per_query']:.2f} ms/query")
        for name, value in metrics.items():
            print(f"  {name:<11} {value:.4f}")
    if retrieved and not retrieved & judged:
        print(f"plaidx eval: error: none of the {len(retrieved)} documents retrieved is named in "
              f"{data / 'qrels' / (args.split + '.tsv')} (which judges {len(judged)}): the index {str(args.index)!r} "
              f"was not built from this collection, or with other document ids; these metrics mean nothing",
              file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _load_queries_qrels(data: Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    from ..rag.sample import read_qrels

    queries = {}
    for where, rec in _jsonl_file(data / "queries.jsonl"):
        if not isinstance(rec, dict) or "_id" not in rec or "text" not in rec:
            raise CliError(f"{where}: expected {{\"_id\": ..., \"text\": ...}}")
        queries[str(rec["_id"])] = rec["text"]
    try:
        return queries, read_qrels(data / "qrels" / f"{split}.tsv")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CliError(str(exc)) from None


def _engine_doc_names(folder: IndexFolder) -> Optional[dict[int, str]]:
    """For bare engine folders whose metadata lists ``doc_ids`` (build order), engine id -> that name."""
    if folder.store is not None:
        return None
    names = folder.engine.metadata.get("doc_ids")
    return {i: str(n) for i, n in enumerate(names)} if isinstance(names, list) else None


METRICS = ("ndcg@10", "recall@100", "mrr@10")


def evaluate(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], qids: Sequence[str]) -> dict:
    """nDCG@10, recall@100 and MRR@10 with ranx, averaged over ``qids`` (a query without results scores 0)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ranx import Qrels, Run
        from ranx import evaluate as ranx_evaluate

        qr = Qrels({q: {d: int(g) for d, g in qrels[q].items()} for q in qids})
        # ranx needs every query in the run; an empty result list counts as a miss.
        rn = Run({q: (run.get(q) or {"__no_result__": 0.0}) for q in qids})
        scores = ranx_evaluate(qr, rn, list(METRICS), make_comparable=True)
    return {m: float(scores[m]) for m in METRICS}
