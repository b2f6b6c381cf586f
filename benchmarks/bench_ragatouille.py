"""What a RAGatouille user feels, plaidx vs RAGatouille 0.0.9.post2, end to end in one run on the same texts and checkpoint.

    bash benchmarks/peers/setup_ragatouille.sh
    .venv/bin/python benchmarks/bench_ragatouille.py [--docs 3204] [--queries 100] [--workdir DIR]

Texts: 3,204 short documents, a mix of every Cranfield (1,400) and CISI (1,460) abstract and the first 344
SciFact abstracts (title plus text, cut at 120 words), from /work/shared/data; queries: the first judged
Cranfield and CISI queries, alternately (nDCG@10 against their qrels). Checkpoint: the Stanford ColBERT
made from the bundled all-MiniLM-L6-v2 with a seeded 384->128 head (benchmarks/peers/make_stanford_checkpoint.py
--seed 0), so both libraries encode with the same weights (it is not a trained ColBERT: compare the two
systems, not the absolute quality).

Each side does what its README shows: ``RAGPretrainedModel.from_pretrained(ckpt)``, ``index(texts,
document_ids, max_document_length=256, split_documents=False)`` at its defaults (RAGatouille picks nbits 4
under 10,000 passages; plaidx its own defaults), except that RAGatouille runs faiss k-means
(``use_faiss=True``; ``--ragatouille-kmeans torch`` for its PyTorch default, which ran out of memory here), then ``search(query, k=10)`` one
query at a time. RAGatouille's search right after ``index()`` ignores ``index_root``, so it reopens with
``from_index`` (timed separately, like plaidx's open). RAGatouille runs in .bench-venv-ragatouille (a
subprocess running this file with ``--worker``), plaidx in the project venv, one after the other, with the
same thread count. Also measured: plaidx opening the RAGatouille-built folder (``from_index`` converts it
beside it) and how its answers agree with RAGatouille's.

Results: benchmarks/results/ragatouille.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from itertools import zip_longest
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PLAIDX_SHARED_DATA", ROOT.parent / "shared" / "data"))
RAG_VENV = ROOT / ".bench-venv-ragatouille"
RESULTS = ROOT / "benchmarks" / "results"
WORDS = 120
K = 10
MAX_DOC_LEN = 256


# ---------------------------------------------------------------------------------------------- shared
def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def percentile_ms(lat: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(lat) * 1e3, q))


def load_texts(n_docs: int, n_queries: int) -> dict:
    """Documents (cranfield + cisi + scifact, in that order, up to n_docs), ids, queries and their qrels."""
    texts, ids = [], []
    for name in ("cranfield", "cisi", "scifact"):
        for line in open(DATA / name / "corpus.jsonl", encoding="utf-8"):
            if len(ids) >= n_docs:
                break
            d = json.loads(line)
            body = " ".join(f"{d.get('title', '')} {d['text']}".split()[:WORDS])
            if body.strip():
                texts.append(body)
                ids.append(f"{name}:{d['_id']}")
    have = set(ids)
    per: dict[str, list] = {}
    for name in ("cranfield", "cisi"):
        qtext = {q["_id"]: q["text"] for q in map(json.loads, open(DATA / name / "queries.jsonl", encoding="utf-8"))}
        qrels: dict[str, dict[str, int]] = {}
        for line in open(DATA / name / "qrels" / "test.tsv", encoding="utf-8").read().splitlines()[1:]:
            qid, did, score = line.split("\t")
            if f"{name}:{did}" in have and int(score) > 0:
                qrels.setdefault(qid, {})[f"{name}:{did}"] = int(score)
        per[name] = [(f"{name}:{q}", qtext[q], qrels[q]) for q in sorted(qrels, key=lambda x: int(x)) if q in qtext]
    queries = [x for pair in zip_longest(per["cranfield"], per["cisi"]) for x in pair if x is not None][:n_queries]
    if not queries:
        raise SystemExit("no judged query has a relevant document among the texts: use more --docs")
    return {"texts": texts, "ids": ids, "queries": [q[1] for q in queries], "query_ids": [q[0] for q in queries],
            "qrels": {q[0]: q[2] for q in queries}}


# ---------------------------------------------------------------------------------------------- RAGatouille side
def ragatouille_worker(workdir: Path) -> None:
    """Runs in .bench-venv-ragatouille: index, reopen, search; writes workdir/ragatouille.json."""
    random.seed(0)
    np.random.seed(0)
    import torch

    torch.manual_seed(0)
    from ragatouille import RAGPretrainedModel

    job = json.loads((workdir / "job.json").read_text())
    root = workdir / "ragatouille_root"
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    rag = RAGPretrainedModel.from_pretrained(job["checkpoint"], index_root=str(root), verbose=0)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    path = rag.index(collection=job["texts"], document_ids=job["ids"], index_name="bench",
                     max_document_length=MAX_DOC_LEN, split_documents=False, use_faiss=job["use_faiss"])
    index_s = time.perf_counter() - t
    t = time.perf_counter()
    rag = RAGPretrainedModel.from_index(path, verbose=0)
    rag.search(job["queries"][0], k=K)  # loads the searcher
    open_s = time.perf_counter() - t
    lat, results = [], []
    for q in job["queries"]:
        t = time.perf_counter()
        res = rag.search(q, k=K)
        lat.append(time.perf_counter() - t)
        results.append([(r["document_id"], float(r["score"])) for r in res])
    meta = json.loads((Path(path) / "metadata.json").read_text())
    out = {"index_s": index_s, "load_s": load_s, "open_s": open_s, "latencies_s": lat, "results": results,
           "index_path": str(path), "index_bytes": folder_bytes(Path(path)), "nbits": meta["config"]["nbits"],
           "nlist": meta.get("num_partitions"), "tokens": meta.get("num_embeddings"),
           "torch_threads": torch.get_num_threads(), "versions": {"torch": torch.__version__}}
    try:
        from importlib.metadata import version

        out["versions"].update({p: version(p) for p in ("ragatouille", "colbert-ai", "transformers")})
    except Exception:  # noqa: BLE001
        pass
    (workdir / "ragatouille.json").write_text(json.dumps(out))


def ragatouille_search_worker(workdir: Path) -> None:
    """Runs in .bench-venv-ragatouille: reopen the index built earlier and time the queries again."""
    from ragatouille import RAGPretrainedModel

    job = json.loads((workdir / "job.json").read_text())
    rag = RAGPretrainedModel.from_index(workdir / "ragatouille_root" / "colbert" / "indexes" / "bench", verbose=0)
    rag.search(job["queries"][0], k=K)
    lat = []
    for q in job["queries"]:
        t = time.perf_counter()
        rag.search(q, k=K)
        lat.append(time.perf_counter() - t)
    (workdir / "ragatouille_search.json").write_text(json.dumps({"latencies_s": lat}))


def search_only(workdir: Path, threads: int, rounds: int = 2) -> dict:
    """Search latency again on the indexes left in workdir, RAGatouille and plaidx alternating per round."""
    from plaidx.rag import RAGPretrainedModel

    job = json.loads((workdir / "job.json").read_text())
    rag_index = workdir / "ragatouille_root" / "colbert" / "indexes" / "bench"
    out: dict = {"ragatouille": [], "plaidx": [], "plaidx_on_ragatouille_folder": [], "loadavg": []}
    own = RAGPretrainedModel.from_index(workdir / "plaidx_root" / "bench", verbose=0, n_gpu=0)
    conv = RAGPretrainedModel.from_index(rag_index, verbose=0, n_gpu=0)
    for _ in range(rounds):
        out["loadavg"].append(list(os.getloadavg()))
        run_ragatouille(workdir, threads, mode="ragatouille-search")
        out["ragatouille"].append(json.loads((workdir / "ragatouille_search.json").read_text())["latencies_s"])
        for name, rag in (("plaidx", own), ("plaidx_on_ragatouille_folder", conv)):
            lat = []
            for q in job["queries"]:
                t = time.perf_counter()
                rag.search(q, k=K)
                lat.append(time.perf_counter() - t)
            out[name].append(lat)
    return out


def run_ragatouille(workdir: Path, threads: int, mode: str = "ragatouille") -> dict:
    py = RAG_VENV / "bin" / "python"
    if not (RAG_VENV / ".ok").is_file():
        raise SystemExit("RAGatouille venv missing: run bash benchmarks/peers/setup_ragatouille.sh first")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               TORCH_EXTENSIONS_DIR=os.environ.get("TORCH_EXTENSIONS_DIR", str(RAG_VENV / "torch_extensions")))
    log = workdir / "ragatouille.log"
    with open(log, "w") as f:
        rc = subprocess.call([str(py), str(Path(__file__).resolve()), "--worker", mode, "--workdir", str(workdir)],
                             stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))
    if rc != 0:
        raise SystemExit(f"the RAGatouille worker failed (rc {rc}); see {log}")
    return json.loads((workdir / f"{mode.replace('-', '_')}.json").read_text())


# ---------------------------------------------------------------------------------------------- plaidx side
def run_plaidx(job: dict, workdir: Path, rag_index: str) -> dict:
    import torch

    from plaidx.rag import RAGPretrainedModel

    root = workdir / "plaidx_root"
    shutil.rmtree(root, ignore_errors=True)
    t = time.perf_counter()
    rag = RAGPretrainedModel.from_pretrained(job["checkpoint"], index_root=root, verbose=0, n_gpu=0)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    path = rag.index(job["texts"], document_ids=job["ids"], index_name="bench", max_document_length=MAX_DOC_LEN,
                     split_documents=False)
    index_s = time.perf_counter() - t
    t = time.perf_counter()
    rag = RAGPretrainedModel.from_index(path, verbose=0, n_gpu=0)
    rag.search(job["queries"][0], k=K)
    open_s = time.perf_counter() - t
    lat, results = [], []
    for q in job["queries"]:
        t = time.perf_counter()
        res = rag.search(q, k=K)
        lat.append(time.perf_counter() - t)
        results.append([(r["document_id"], float(r["score"])) for r in res])
    # the same index, each query cut at the model's query length (Stanford ColBERT's reading, plaidx's before
    # plaidx.rag.queries): what reading long queries whole changes
    h = rag._handle("bench")
    cut = h.search(rag.model.encode_queries(job["queries"]), K)
    info = h.describe()
    out = {"results_queries_cut": [[(x.document_id, x.score) for x in row] for row in cut],
           "queries_over_query_length": int(sum(n > rag.model.query_length for n in
                                                rag.model.count_tokens(job["queries"], add_special_tokens=True))),
           "query_length": rag.model.query_length, "index_s": index_s, "load_s": load_s, "open_s": open_s, "latencies_s": lat, "results": results,
           "index_path": str(path), "index_bytes": folder_bytes(Path(path)), "nbits": info["nbits"],
           "nlist": info["nlist"], "tokens": info["tokens"], "torch_threads": torch.get_num_threads()}
    # the RAGatouille-built folder opened by plaidx (converted once beside it), then searched
    shutil.rmtree(Path(rag_index).with_name(Path(rag_index).name + ".plaidx"), ignore_errors=True)
    t = time.perf_counter()
    conv = RAGPretrainedModel.from_index(rag_index, verbose=0, n_gpu=0)
    conv.search(job["queries"][0], k=K)
    out["convert_open_s"] = time.perf_counter() - t
    clat, cres = [], []
    for q in job["queries"]:
        t = time.perf_counter()
        res = conv.search(q, k=K)
        clat.append(time.perf_counter() - t)
        cres.append([(r["document_id"], float(r["score"])) for r in res])
    out["converted"] = {"latencies_s": clat, "results": cres,
                        "index_bytes": folder_bytes(Path(rag_index).with_name(Path(rag_index).name + ".plaidx"))}
    return out


def ndcg(qrels: dict, query_ids: list[str], results: list) -> float:
    try:
        from ranx import Qrels, Run, evaluate
    except ImportError:
        return float("nan")
    run = {q: ({d: s for d, s in r} or {"__none__": 0.0}) for q, r in zip(query_ids, results)}
    return float(evaluate(Qrels(qrels), Run(run), "ndcg@10"))


def overlap(a: list, b: list) -> float:
    return float(np.mean([len({d for d, _ in x} & {d for d, _ in y}) / max(1, len(y)) for x, y in zip(a, b)]))


# ---------------------------------------------------------------------------------------------- report
def write_report(res: dict, stem: str = "ragatouille") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1))
    p, r, c = res["plaidx"], res["ragatouille"], res["plaidx_on_ragatouille_folder"]
    mib = 2 ** 20

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "-"

    rows = [
        ("index() time, s", f"{p['index_s']:.1f}", f"{r['index_s']:.1f}", ratio(p["index_s"], r["index_s"])),
        ("search p50, ms (one query per call)", f"{p['p50_ms']:.1f}", f"{r['p50_ms']:.1f}",
         ratio(p["p50_ms"], r["p50_ms"])),
        ("search p95, ms", f"{p['p95_ms']:.1f}", f"{r['p95_ms']:.1f}", ratio(p["p95_ms"], r["p95_ms"])),
        ("index size on disk, MiB", f"{p['index_bytes'] / mib:.1f}", f"{r['index_bytes'] / mib:.1f}",
         ratio(p["index_bytes"], r["index_bytes"])),
        ("nbits / centroids", f"{p['nbits']} / {p['nlist']}", f"{r['nbits']} / {r['nlist']}", ""),
        ("model load, s", f"{p['load_s']:.1f}", f"{r['load_s']:.1f}", ratio(p["load_s"], r["load_s"])),
        ("reopen + first search, s", f"{p['open_s']:.1f}", f"{r['open_s']:.1f}", ratio(p["open_s"], r["open_s"])),
        ("nDCG@10 (qrels)", f"{p['ndcg10']:.3f}", f"{r['ndcg10']:.3f}", ""),
    ]
    m = res["meta"]
    lines = [
        "# plaidx vs RAGatouille 0.0.9.post2: what a RAGatouille user feels",
        "",
        f"- date: {m['date']}; git commit: {m['git_commit']}",
        f"- machine: {m['machine'].get('cpu')}, {m['machine'].get('cpu_count')} cores, load average at start "
        f"{m['machine'].get('loadavg_1_5_15')}; BLAS: {m['blas']}; OPENBLAS_CORETYPE="
        f"{m['machine'].get('env', {}).get('OPENBLAS_CORETYPE')}",
        f"- command: `{m['command']}`",
        f"- texts: {m['n_docs']} documents ({m['mix']}), cut at {WORDS} words; {res['plaidx']['tokens']} plaidx "
        f"tokens / {res['ragatouille']['tokens']} colbert-ai tokens; {m['n_queries']} queries (Cranfield and CISI, "
        "judged), k = 10",
        f"- checkpoint: {m['checkpoint_note']}",
        f"- RAGatouille k-means: {m['ragatouille_kmeans']} ("
        + ("use_faiss=True: its PyTorch k-means, the default under 75,000 passages, was killed for memory "
           "(7.3 GB RSS) on these 3,204 documents on this 23 GB shared machine" if m["ragatouille_kmeans"] == "faiss"
           else "its default PyTorch k-means") + ")",
        f"- threads: torch {p['torch_threads']} (plaidx) / {r['torch_threads']} (RAGatouille); versions: "
        f"{json.dumps(r.get('versions', {}))}",
        "- the machine is shared and noisy: read the ratios, not the absolute times",
        "",
        "| | plaidx | RAGatouille | plaidx / RAGatouille |",
        "|---|---:|---:|---:|",
        *[f"| {a} | {b} | {c_} | {d} |" for a, b, c_, d in rows],
        "",
        "## The RAGatouille-built folder opened by plaidx",
        "",
        f"`RAGPretrainedModel.from_index(<RAGatouille folder>)` converted it beside the source in "
        f"{c['convert_open_s']:.1f} s (first search included); converted folder {c['index_bytes'] / mib:.1f} MiB "
        f"(the source {r['index_bytes'] / mib:.1f} MiB is untouched). Search p50 {c['p50_ms']:.1f} ms; top-10 "
        f"overlap with RAGatouille's own answers {c['overlap_vs_ragatouille']:.3f}; nDCG@10 {c['ndcg10']:.3f}.",
        "",
        f"Top-10 overlap between plaidx's own index and RAGatouille's: {res['overlap_plaidx_vs_ragatouille']:.3f}.",
        "",
    ]
    if "ndcg10_queries_cut" in p:
        lines += ["## Long queries", "",
                  f"{p['queries_over_query_length']} of the {m['n_queries']} queries are longer than the checkpoint's "
                  f"query length ({p['query_length']} tokens). RAGatouille reads each at int(words * 1.35) tokens, "
                  "and so does plaidx (`plaidx.rag.queries`). Cut at the query length instead, as Stanford ColBERT "
                  f"reads them, plaidx's index scores nDCG@10 {p['ndcg10_queries_cut']:.3f} against "
                  f"{p['ndcg10']:.3f} (the same index, in this run).", ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))


def write_search_report(res: dict, workdir: Path, args: argparse.Namespace) -> None:
    job = json.loads((workdir / "job.json").read_text())
    res["meta"] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": git_commit(),
                   "command": " ".join([".venv/bin/python", "benchmarks/bench_ragatouille.py", *sys.argv[1:]]),
                   "n_queries": len(job["queries"]), "n_docs": len(job["texts"])}
    stem = f"{args.stem}_search"
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1))
    lines = ["# plaidx vs RAGatouille 0.0.9.post2: search latency again, alternating, on the indexes of the full run",
             "", f"- date: {res['meta']['date']}; git commit: {res['meta']['git_commit']}",
             f"- command: `{res['meta']['command']}` (after the full run in benchmarks/results/{args.stem}.md, same "
             "machine, workdir and indexes)",
             f"- {res['meta']['n_queries']} queries, k = 10, one query per call; load average at each round's start: "
             f"{res['loadavg']}", "",
             "| round | RAGatouille p50 ms | plaidx p50 ms | plaidx on the converted RAGatouille folder p50 ms | "
             "plaidx / RAGatouille |", "|---:|---:|---:|---:|---:|"]
    for i, (r, p, c) in enumerate(zip(res["ragatouille"], res["plaidx"], res["plaidx_on_ragatouille_folder"])):
        rp, pp, cp = (percentile_ms(x, 50) for x in (r, p, c))
        lines.append(f"| {i + 1} | {rp:.1f} | {pp:.1f} | {cp:.1f} | {pp / rp:.2f} |")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=3204)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--workdir", default="/tmp/plaidx_bench_ragatouille")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--worker", choices=["ragatouille", "ragatouille-search"], help=argparse.SUPPRESS)
    ap.add_argument("--search-only", action="store_true",
                    help="time the searches again on the indexes a full run left in --workdir, RAGatouille and "
                         "plaidx alternating (two rounds); writes <stem>_search.{md,json}")
    ap.add_argument("--stem", default="ragatouille", help="result file name under benchmarks/results/")
    ap.add_argument("--ragatouille-kmeans", choices=["faiss", "torch"], default="faiss",
                    help="RAGatouille's k-means: faiss (use_faiss=True) or its PyTorch replacement, its default "
                         "under 75,000 passages, which was killed for memory (7.3 GB RSS) on the 3,204 documents here")
    args = ap.parse_args()
    workdir = Path(args.workdir).absolute()
    if args.worker == "ragatouille":
        ragatouille_worker(workdir)
        return
    if args.worker == "ragatouille-search":
        ragatouille_search_worker(workdir)
        return
    if args.search_only:
        write_search_report(search_only(workdir, args.threads), workdir, args)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workdir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "benchmarks" / "peers"))
    import torch
    from bench_engine import machine_info
    from make_stanford_checkpoint import make_checkpoint

    torch.set_num_threads(args.threads)
    ckpt = workdir / "minilm-colbert-seed0"
    if not (ckpt / "model.safetensors").is_file():
        shutil.rmtree(ckpt, ignore_errors=True)
        make_checkpoint(ckpt, seed=0)
    data = load_texts(args.docs, args.queries)
    job = {"checkpoint": str(ckpt), "use_faiss": args.ragatouille_kmeans == "faiss", **data}
    (workdir / "job.json").write_text(json.dumps(job))
    machine = machine_info(args.threads)
    print(f"[bench] {len(data['texts'])} documents, {len(data['queries'])} queries; RAGatouille first", flush=True)
    rag = run_ragatouille(workdir, args.threads)
    print(f"[bench] RAGatouille: index {rag['index_s']:.1f} s; now plaidx", flush=True)
    px = run_plaidx(job, workdir, rag["index_path"])
    for side in (rag, px, px["converted"]):
        side["p50_ms"] = percentile_ms(side["latencies_s"], 50)
        side["p95_ms"] = percentile_ms(side["latencies_s"], 95)
        side["ndcg10"] = ndcg(data["qrels"], data["query_ids"], side["results"])
    px["ndcg10_queries_cut"] = ndcg(data["qrels"], data["query_ids"], px["results_queries_cut"])
    px["converted"]["convert_open_s"] = px.pop("convert_open_s")
    px["converted"]["overlap_vs_ragatouille"] = overlap(px["converted"]["results"], rag["results"])
    blas = [f"{b.get('internal_api')} {b.get('version')} ({b.get('architecture')})"
            for b in machine.get("blas_harness", [])]
    res = {"meta": {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": git_commit(),
                    "machine": machine, "blas": "; ".join(blas) or "unknown",
                    "command": " ".join([".venv/bin/python", "benchmarks/bench_ragatouille.py", *sys.argv[1:]]),
                    "n_docs": len(data["texts"]), "n_queries": len(data["queries"]),
                    "mix": "all 1,400 Cranfield + all 1,460 CISI + first 344 SciFact" if args.docs == 3204
                    else f"the first {args.docs} of Cranfield, CISI, SciFact in that order",
                    "ragatouille_kmeans": args.ragatouille_kmeans,
                    "checkpoint_note": "bundled all-MiniLM-L6-v2 BERT + seeded (0) 384->128 linear head, "
                                       "Stanford HF_ColBERT layout (make_stanford_checkpoint.py)"},
           "plaidx": {k: v for k, v in px.items() if k != "converted"}, "ragatouille": rag,
           "plaidx_on_ragatouille_folder": px["converted"],
           "overlap_plaidx_vs_ragatouille": overlap(px["results"], rag["results"])}
    write_report(res, args.stem)
    print((RESULTS / f"{args.stem}.md").read_text())


if __name__ == "__main__":
    main()
