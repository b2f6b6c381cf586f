"""Encoding throughput of plaidx.ColBERT's default model vs sentence-transformers on the same model.

Both encode the same BEIR documents (title + text) into per-token embeddings on the same machine with the
same torch thread count, batch size and maximum length (the model's 256 tokens): plaidx with
``encode_documents`` (L2-normalised float32 arrays, padding removed), sentence-transformers with
``encode(..., output_value="token_embeddings")`` (unnormalised tensors, padding removed). The outputs are
also compared (same tokens, same vectors once normalised).

Two timings per thread count, after a warm-up of each encoder:

- end to end: whole-collection calls, alternating between the encoders; median and best of the repeats;
- batch-interleaved: each encoder's collection put in the order its own ``encode`` sorts it into (plaidx:
  token length, sentence-transformers: character length), then one batch-sized call of each in turn, so
  both see the same machine load; per-encoder totals, median of the repeats. On a shared machine this is
  the steadier comparison; it runs exactly the batches of the end-to-end calls.

    .venv/bin/python benchmarks/bench_encode.py --dataset scifact --ndocs 300 --threads 1 2

Writes benchmarks/results/encode.json and encode.md. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def load_texts(data_root: Path, dataset: str, n: int, kind: str) -> list[str]:
    path = data_root / dataset / ("corpus.jsonl" if kind == "documents" else "queries.jsonl")
    if not path.is_file():
        raise SystemExit(f"no {path}: pass --data-root pointing at a folder of BEIR collections")
    texts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            title, text = (row.get("title") or "").strip(), (row.get("text") or "").strip()
            texts.append(f"{title}. {text}" if title else text)
            if len(texts) >= n:
                break
    return [t for t in texts if t.strip()]


def timed(fn) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def rate_of(seconds: list[float], items: int, toks: int) -> dict[str, Any]:
    med, best = statistics.median(seconds), min(seconds)
    return {"seconds_median": round(med, 3), "seconds_best": round(best, 3), "seconds_all": [round(t, 3) for t in seconds],
            "items_per_s": round(items / med, 2), "tokens_per_s": round(toks / med, 1),
            "items_per_s_best": round(items / best, 2), "tokens_per_s_best": round(toks / best, 1)}


def run_one(threads: int, model, st, docs: list[str], queries: list[str], bs: int, repeats: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    load_start = list(os.getloadavg())
    enc_docs = {"plaidx": lambda: model.encode_documents(docs, bsize=bs, show_progress_bar=False),
                "st": lambda: st.encode(docs, batch_size=bs, output_value="token_embeddings", show_progress_bar=False)}
    enc_queries = {"plaidx": lambda: model.encode_queries(queries, bsize=bs, show_progress_bar=False),
                   "st": lambda: st.encode(queries, batch_size=bs, output_value="token_embeddings",
                                           show_progress_bar=False)}
    # Warm-up (first-call allocations, thread pools) on a slice, both sides.
    model.encode_documents(docs[:bs], bsize=bs)
    st.encode(docs[:bs], batch_size=bs, output_value="token_embeddings", show_progress_bar=False)

    times: dict[str, list[float]] = {f"{w}_{k}": [] for w in ("docs", "queries") for k in ("plaidx", "st")}
    outputs: dict[str, Any] = {}
    for r in range(repeats):
        for what, fns in (("docs", enc_docs), ("queries", enc_queries)):
            for name in (("plaidx", "st") if r % 2 == 0 else ("st", "plaidx")):
                dt, out = timed(fns[name])
                times[f"{what}_{name}"].append(dt)
                outputs[f"{what}_{name}"] = out
                print(f"threads {threads} repeat {r + 1}: {what:8s} {name:7s} {dt:7.2f} s", flush=True)

    # Batch-interleaved: the same batches as the whole-collection calls, timed in turn.
    p_docs = [docs[i] for i in np.argsort(-np.array(model.count_tokens(docs)), kind="stable")]
    s_docs = [docs[i] for i in np.argsort([-len(t) for t in docs], kind="stable")]
    inter: dict[str, list[float]] = {"plaidx": [], "st": []}
    for r in range(repeats):
        tot = {"plaidx": 0.0, "st": 0.0}
        for j, start in enumerate(range(0, len(docs), bs)):
            calls = {"plaidx": lambda s=start: model.encode_documents(p_docs[s:s + bs], bsize=bs),
                     "st": lambda s=start: st.encode(s_docs[s:s + bs], batch_size=bs,
                                                     output_value="token_embeddings", show_progress_bar=False)}
            for name in (("plaidx", "st") if (j + r) % 2 == 0 else ("st", "plaidx")):
                tot[name] += timed(calls[name])[0]
        for k, v in tot.items():
            inter[k].append(v)
        print(f"threads {threads} repeat {r + 1}: interleaved plaidx {tot['plaidx']:7.2f} s  st {tot['st']:7.2f} s",
              flush=True)

    ours, theirs = outputs["docs_plaidx"], outputs["docs_st"]
    n_tokens = int(sum(len(e) for e in ours))
    q_tokens = int(sum(len(e) for e in outputs["queries_st"]))
    same_counts = all(len(a) == len(b) for a, b in zip(ours, theirs))
    max_diff = (max(float(np.abs(a - torch.nn.functional.normalize(b.float(), dim=-1).numpy()).max())
                    for a, b in zip(ours, theirs)) if same_counts else None)
    res = {
        "threads": threads, "document_tokens": n_tokens, "query_tokens": q_tokens,
        "plaidx_documents": rate_of(times["docs_plaidx"], len(docs), n_tokens),
        "sentence_transformers_documents": rate_of(times["docs_st"], len(docs), n_tokens),
        "plaidx_documents_interleaved": rate_of(inter["plaidx"], len(docs), n_tokens),
        "sentence_transformers_documents_interleaved": rate_of(inter["st"], len(docs), n_tokens),
        "plaidx_queries": rate_of(times["queries_plaidx"], len(queries), q_tokens),
        "sentence_transformers_queries": rate_of(times["queries_st"], len(queries), q_tokens),
        "same_token_counts": same_counts, "max_abs_diff_vs_normalised_st": max_diff,
        "loadavg_start": load_start, "loadavg_end": list(os.getloadavg()),
    }
    res["speedup_documents_interleaved"] = round(statistics.median(inter["st"]) / statistics.median(inter["plaidx"]), 3)
    res["speedup_documents"] = round(res["plaidx_documents"]["items_per_s"]
                                     / res["sentence_transformers_documents"]["items_per_s"], 3)
    res["speedup_documents_best"] = round(res["plaidx_documents"]["items_per_s_best"]
                                          / res["sentence_transformers_documents"]["items_per_s_best"], 3)
    res["speedup_queries"] = round(res["plaidx_queries"]["items_per_s"]
                                   / res["sentence_transformers_queries"]["items_per_s"], 3)
    return res


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Encoding throughput: plaidx.ColBERT vs sentence-transformers",
        "",
        f"Model: `{result['model']}` (bundled copy), CPU, batch size {result['bsize']}, max length "
        f"{result['document_length']}. Data: first {result['n_documents']} {result['dataset']} documents (title + "
        f"text, {result['runs'][0]['document_tokens']} tokens kept) and first {result['n_queries']} queries. "
        f"{result['repeats']} repeats after warm-up; both encoders use the same torch thread count in each row.",
        "",
        "| threads | encoder | docs/s batch-interleaved | tokens/s batch-interleaved | docs/s end to end (median / best) "
        "| tokens/s end to end (median / best) | queries/s | query tokens/s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in result["runs"]:
        for label, key in (("plaidx", "plaidx"), ("sentence-transformers", "sentence_transformers")):
            i, d, q = run[f"{key}_documents_interleaved"], run[f"{key}_documents"], run[f"{key}_queries"]
            lines.append(f"| {run['threads']} | {label} | {i['items_per_s']} | {i['tokens_per_s']} | "
                         f"{d['items_per_s']} / {d['items_per_s_best']} | {d['tokens_per_s']} / {d['tokens_per_s_best']} "
                         f"| {q['items_per_s']} | {q['tokens_per_s']} |")
    lines += ["", "plaidx / sentence-transformers:"]
    for run in result["runs"]:
        diff = run["max_abs_diff_vs_normalised_st"]
        lines.append(f"- {run['threads']} thread(s): documents {run['speedup_documents_interleaved']:.2f}x batch-"
                     f"interleaved, {run['speedup_documents']:.2f}x end to end (median; "
                     f"{run['speedup_documents_best']:.2f}x best), queries {run['speedup_queries']:.2f}x; same token "
                     f"counts: {run['same_token_counts']}, largest difference from sentence-transformers' normalised "
                     f"vectors {diff:.1e}; load average {run['loadavg_start'][0]:.1f} -> {run['loadavg_end'][0]:.1f}.")
    m = result["machine"]
    lines += ["", f"Machine: {m['platform']}, {m['cpu_count']} cores, torch {m['torch']}, transformers "
              f"{m['transformers']}, sentence-transformers {m['sentence_transformers']}. Other jobs shared this "
              "machine while it ran (see the load averages), so end-to-end times vary from run to run; the "
              "batch-interleaved totals put both encoders under the same load. Per-run times: encode.json.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--ndocs", type=int, default=300)
    ap.add_argument("--nqueries", type=int, default=300)
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch thread counts to measure, each for both encoders (default: torch's)")
    ap.add_argument("--bsize", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    thread_counts = args.threads or [torch.get_num_threads()]
    sys.path.insert(0, str(REPO))
    import sentence_transformers
    import transformers
    from sentence_transformers import SentenceTransformer

    from plaidx.encoder import ColBERT

    docs = load_texts(args.data_root, args.dataset, args.ndocs, "documents")
    queries = load_texts(args.data_root, args.dataset, args.nqueries, "queries")
    model = ColBERT.from_pretrained(device="cpu")
    st = SentenceTransformer(model.path, device="cpu")
    st.max_seq_length = model.document_length

    result = {
        "dataset": args.dataset, "n_documents": len(docs), "n_queries": len(queries), "model": model.name_or_path,
        "document_length": model.document_length, "bsize": args.bsize, "repeats": args.repeats,
        "runs": [run_one(t, model, st, docs, queries, args.bsize, args.repeats) for t in thread_counts],
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "sentence_transformers": sentence_transformers.__version__},
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "encode.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (args.out_dir / "encode.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
