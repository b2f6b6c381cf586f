"""Synthetic collection families not tuned on: other topic geometry, lengths, duplicates, topic sizes.

``synthetic.py`` is the generator every default so far was tuned on (4096 isotropic topics, Zipf 1,
log-normal lengths). These families change one structural property each, so a codec or default that
only fits that generator shows up as a loss here:

- ``lowrank``: topic centres in a 24-dimensional subspace (plus a little full-rank noise) and tokens
  spread along 6 topic-specific directions (anisotropic clusters), little isotropic noise;
- ``heavytail``: Pareto document lengths (alpha 1.4, 8 to 2,000 tokens, mean about 100), topics per
  document growing with length;
- ``neardup``: 40% of the documents are near-copies of an earlier document (each token jittered, a
  tenth replaced), so the exact top-10 holds many close ties;
- ``manytopics``: 32,768 topics with flat popularity (Zipf 0.5): few tokens per topic, tight clusters;
- ``fewtopics``: 512 topics with Zipf 1.2 and a different noise level per topic (0.3-1.0): many tokens
  per topic, clusters of very different widths.
- ``hubs`` (added after every default was chosen, and not tuned on: a held-out family): d 96 (as
  answerai-colbert-small), 8,192 topics (Zipf 0.8, noise 0.45-0.75 per topic), about 30% of each
  document's tokens drawn from 64 shared "function word" hubs (Zipf 1.5, tight: the few crowded cells
  real ColBERT indexes have), and two length modes (about 30 and 170 tokens).

Queries: 32 tokens from a source document, 24 noisy copies of its tokens and 8 of its topic centres
(as in ``synthetic.py``). Written in chunks straight to disk (bounded memory) in the cache format of
``collection.py``; ``families.ensure(name, n_docs)`` returns the cached collection.

    .venv/bin/python benchmarks/families.py --family lowrank --ndocs 10000      # ~1M tokens + ground truth
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collection import CACHE_DIR, Collection, exact_topk_cached, is_complete, load_collection, write_meta  # noqa: E402

Q_TOKENS = 32
CHUNK_DOCS = 1024
FAMILIES = ("lowrank", "heavytail", "neardup", "manytopics", "fewtopics", "hubs")
SCALABLE_LENGTHS = ("lowrank", "neardup", "manytopics", "fewtopics")  # Family(mean_len=): their log-normal lengths
DIMS = {"hubs": 96}  # the token dimension of a family whose default is not 128
N_HUBS = 64


def family_dim(name: str, dim: int | None = None) -> int:
    """``dim``, or the family's own default (128 unless ``DIMS`` names another)."""
    return DIMS.get(name, 128) if dim is None else dim


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _jitter(rng: np.random.Generator, base: np.ndarray, sigma) -> np.ndarray:
    """unit(base + sigma * z / sqrt(d)); sigma a scalar or one value per row."""
    d = base.shape[-1]
    s = np.asarray(sigma, dtype=np.float32)
    if s.ndim == 1:
        s = s[:, None]
    return _unit(base + (s / np.sqrt(d)) * rng.standard_normal(base.shape, dtype=np.float32))


class Family:
    """One family's seeded model: topics, their popularity and shapes, document lengths."""

    def __init__(self, name: str, n_docs: int, dim: int | None = None, seed: int = 0, mean_len: int | None = None):
        if name not in FAMILIES:
            raise ValueError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
        if mean_len is not None and (name not in SCALABLE_LENGTHS or not 4 <= mean_len <= 400):
            raise ValueError(f"mean_len sets the log-normal lengths of {', '.join(SCALABLE_LENGTHS)} (4 to 400 "
                             f"tokens), got {mean_len!r} for {name!r}")
        dim = family_dim(name, dim)
        self.name, self.n_docs, self.dim, self.seed = name, n_docs, dim, seed
        rng = np.random.default_rng([seed, 100, FAMILIES.index(name)])
        n_topics, zipf = {"manytopics": (32768, 0.5), "fewtopics": (512, 1.2), "hubs": (8192, 0.8)}.get(name, (4096, 1.0))
        self.n_topics = n_topics
        if name == "lowrank":
            basis = np.linalg.qr(rng.standard_normal((dim, 24)))[0].astype(np.float32)  # (d, 24)
            w = rng.standard_normal((n_topics, 24), dtype=np.float32)
            self.centres = _unit(w @ basis.T + 0.25 * np.sqrt(24 / dim) * rng.standard_normal((n_topics, dim), dtype=np.float32))
            self.dirs = rng.standard_normal((n_topics, 6, dim), dtype=np.float32) / np.sqrt(dim)
        else:
            common = _unit(rng.standard_normal(dim, dtype=np.float32))
            z = rng.standard_normal((n_topics, dim), dtype=np.float32) / np.sqrt(dim)
            self.centres = _unit(z + (0.25 if name == "hubs" else 0.4) * common)
        if name == "fewtopics":
            self.noise = rng.uniform(0.3, 1.0, n_topics).astype(np.float32)
        elif name == "hubs":
            self.noise = rng.uniform(0.45, 0.75, n_topics).astype(np.float32)
            self.hubs = _unit(rng.standard_normal((N_HUBS, dim), dtype=np.float32))
            hub_pop = 1.0 / np.arange(1, N_HUBS + 1) ** 1.5
            self.hub_popularity = hub_pop / hub_pop.sum()
        else:
            self.noise = np.full(n_topics, {"manytopics": 0.5}.get(name, 0.6), np.float32)
        pop = 1.0 / np.arange(1, n_topics + 1) ** zipf
        self.popularity = pop / pop.sum()
        if name == "heavytail":
            lens = 8 + 40 * rng.pareto(1.4, size=n_docs)
            lens = np.minimum(lens, 2000)
            lens = lens * (100.0 / lens.mean())
            self.lengths = np.clip(np.rint(lens), 8, 2000).astype(np.int64)
        elif name == "hubs":  # two modes: short passages and long ones
            long = rng.random(n_docs) < 0.4
            mu = np.where(long, np.log(170), np.log(30)) - 0.4**2 / 2
            self.lengths = np.clip(np.rint(rng.lognormal(mu, 0.4)), 6, 600).astype(np.int64)
        else:  # mean 100 tokens, or mean_len (at least 4 tokens then, as short as sentences)
            mu = np.log(mean_len or 100) - 0.6**2 / 2
            lens = np.rint(rng.lognormal(mu, 0.6, size=n_docs))
            self.lengths = np.clip(lens, 8 if mean_len is None else 4, 400).astype(np.int64)
        # near-duplicates: document i copies document src[i] < i of the same chunk (-1: original)
        self.src = np.full(n_docs, -1, np.int64)
        if name == "neardup":
            for i in range(n_docs):
                lo = (i // CHUNK_DOCS) * CHUNK_DOCS
                if i > lo and rng.random() < 0.4:
                    self.src[i] = rng.integers(lo, i)
                    self.lengths[i] = self.lengths[self.src[i]]
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def _tokens(self, rng: np.random.Generator, topics: np.ndarray, sense: np.ndarray, which: np.ndarray) -> np.ndarray:
        t = topics[which]
        base = sense[which]
        if self.name == "lowrank":
            coef = rng.standard_normal((len(which), 6), dtype=np.float32) * 0.9
            base = base + np.einsum("nk,nkd->nd", coef, self.dirs[t])
            return _jitter(rng, base, 0.25)
        return _jitter(rng, base, self.noise[t])

    def chunk(self, c: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """Documents of chunk c with each one's topic senses and topic ids (deterministic per chunk)."""
        rng = np.random.default_rng([self.seed, 101, c])
        docs, senses, topic_ids = [], [], []
        lo = c * CHUNK_DOCS
        for i in range(lo, min(self.n_docs, lo + CHUNK_DOCS)):
            n_tok = int(self.lengths[i])
            if self.src[i] >= 0:
                j = int(self.src[i] - lo)
                x = _jitter(rng, docs[j], 0.15)
                swap = rng.random(n_tok) < 0.1
                x[swap] = docs[j][rng.integers(0, n_tok, int(swap.sum()))]
                docs.append(x)
                senses.append(senses[j])
                topic_ids.append(topic_ids[j])
                continue
            n_top = 1 + rng.poisson(2.0 if self.name != "heavytail" else 1.0 + n_tok / 60)
            n_top = int(min(n_top, 6 if self.name != "heavytail" else 24))
            topics = rng.choice(self.n_topics, size=n_top, replace=False, p=self.popularity)
            sense = _jitter(rng, self.centres[topics], 0.25)
            which = rng.choice(n_top, size=n_tok, p=rng.dirichlet(np.ones(n_top)))
            x = self._tokens(rng, topics, sense, which)
            if self.name == "hubs":  # a share of the tokens are function words: one of the shared hubs
                pos = np.flatnonzero(rng.random(n_tok) < rng.beta(3.0, 7.0))
                hub = rng.choice(N_HUBS, size=len(pos), p=self.hub_popularity)
                x[pos] = _jitter(rng, self.hubs[hub], 0.2)
            docs.append(x)
            senses.append(sense)
            topic_ids.append(topics)
        return docs, senses, topic_ids


def cache_path(name: str, n_docs: int, dim: int | None, nq: int, seed: int, mean_len: int | None = None) -> Path:
    length = "" if mean_len is None else f"_len{mean_len}"
    return CACHE_DIR / f"family_{name}_n{n_docs}_d{family_dim(name, dim)}_q{nq}_s{seed}{length}"


def generate(name: str, n_docs: int, dim: int | None, nq: int, seed: int, out: Path, log: bool = True,
             mean_len: int | None = None) -> Collection:
    out.mkdir(parents=True, exist_ok=True)
    fam = Family(name, n_docs, dim, seed, mean_len)
    dim = fam.dim
    n_tok = int(fam.offsets[-1])
    qrng = np.random.default_rng([seed, 102])
    sources = np.sort(qrng.choice(n_docs, size=nq, replace=False))
    queries = np.empty((nq, Q_TOKENS, dim), np.float32)
    n_topic_q = Q_TOKENS // 4
    t0 = time.perf_counter()
    with open(out / "values.npy.tmp", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                 "fortran_order": False, "shape": (n_tok, dim)})
        for c in range(-(-n_docs // CHUNK_DOCS)):
            docs, senses, _ = fam.chunk(c)
            lo = c * CHUNK_DOCS
            np.concatenate(docs).tofile(f)
            for qi in np.flatnonzero((sources >= lo) & (sources < lo + len(docs))):
                doc, sense = docs[sources[qi] - lo], senses[sources[qi] - lo]
                qr = np.random.default_rng([seed, 103, int(qi)])
                picks = qr.choice(len(doc), size=Q_TOKENS - n_topic_q, replace=len(doc) < Q_TOKENS - n_topic_q)
                queries[qi] = np.concatenate([_jitter(qr, doc[picks], 0.35),
                                              _jitter(qr, sense[qr.integers(0, len(sense), n_topic_q)], 0.6)])
            if log and c % 10 == 0:
                print(f"[families] {name}: docs {lo + len(docs)}/{n_docs} {time.perf_counter() - t0:.1f}s", flush=True)
    os.replace(out / "values.npy.tmp", out / "values.npy")
    np.save(out / "offsets.npy", fam.offsets)
    np.save(out / "queries.npy", queries)
    np.save(out / "sources.npy", sources.astype(np.int64))
    write_meta(out, {"kind": "family", "family": name, "n_docs": n_docs, "dim": dim, "nq": nq, "seed": seed,
                     "mean_len": mean_len,
                     "n_topics": fam.n_topics, "n_tokens": n_tok, "q_tokens": Q_TOKENS,
                     "mean_len_actual": float(fam.lengths.mean()), "max_len": int(fam.lengths.max()),
                     "near_duplicates": int((fam.src >= 0).sum()), "generate_s": round(time.perf_counter() - t0, 1)})
    return load_collection(out)


def ensure(name: str, n_docs: int = 10_000, dim: int | None = None, nq: int = 300, seed: int = 0, log: bool = True,
           mean_len: int | None = None) -> Collection:
    """The cached collection of family ``name``, generated on first use; ``mean_len``: documents of that many
    tokens on average instead of 100 (the log-normal families only)."""
    path = cache_path(name, n_docs, dim, nq, seed, mean_len)
    if is_complete(path):
        return load_collection(path)
    return generate(name, n_docs, dim, nq, seed, path, log=log, mean_len=mean_len)


def topics_of(coll: Collection) -> list[frozenset[int]]:
    """Each document's topic ids in a family collection, drawn again from the generator's seeds (not stored)."""
    m = coll.meta
    if m.get("kind") != "family":
        raise ValueError(f"{coll.path} is not a family collection: topics are known only for those")
    fam = Family(m["family"], m["n_docs"], m["dim"], m["seed"], m.get("mean_len"))
    return [frozenset(map(int, t)) for c in range(-(-fam.n_docs // CHUNK_DOCS)) for t in fam.chunk(c)[2]]


def shares_topic(topics: list[frozenset[int]], sources: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """bool, the shape of ids (queries x ranks): whether each listed document shares a topic with the document its
    query was drawn from (``sources``; -1 padding never does). Where few do, a query's exact top-k is filled with
    documents whose MaxSim is the sum of chance similarities, which no index narrows down."""
    return np.array([[d >= 0 and bool(topics[d] & topics[s]) for d in row] for s, row in zip(sources, ids)],
                    dtype=bool).reshape(np.shape(ids))


def topic_share(coll: Collection, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(:func:`shares_topic` of the listed documents ``ids`` (queries x ranks), how many documents of the collection
    share a topic with each query's source, the sources) of a family collection."""
    topics = topics_of(coll)
    sources = np.load(coll.path / "sources.npy")
    related = np.array([sum(1 for t in topics if t & topics[s]) for s in sources])
    return shares_topic(topics, sources, ids), related, sources


def topic_stats(coll: Collection, threads: int | None = None) -> dict:
    """How topical a family's exact neighbours are: how many documents share a topic with each query's source
    document, which of the exact top-100 do (ranks 1-10, 2-10, 11-100), and how close the 10th and 20th scores are."""
    scores, ids = exact_topk_cached(coll, 100, threads=threads)
    share, related, sources = topic_share(coll, ids)
    return {"family": coll.meta["family"], "n_docs": coll.n_docs, "n_tokens": coll.n_tokens, "nq": len(sources),
            "source_ranked_first": float(np.mean(ids[:, 0] == sources)),
            "related_docs_median": float(np.median(related)), "related_docs_mean": float(related.mean()),
            "top10_sharing": float(share[:, :10].mean()), "ranks_2_10_sharing": float(share[:, 1:10].mean()),
            "ranks_11_100_sharing": float(share[:, 10:100].mean()),
            "gap_10_20_median": float(np.median((scores[:, 9] - scores[:, 19]) / scores[:, 9]))}


def topic_report(rows: list[dict], stamp: str) -> str:
    lines = ["# How topical each family's exact neighbours are", "", stamp, "",
             "For each query, the documents of the collection that share a topic with the document the query was "
             "drawn from (its source), and the share of the query's exact top-100 (MaxSim over the float32 "
             "embeddings) that do. A neighbour that shares no topic scores by chance similarities alone. gap: the "
             "median of (10th - 20th exact score) / 10th.", "",
             "| family | tokens | documents sharing a topic with the source, median / mean | source ranked first "
             "| top-10 sharing | ranks 2-10 | ranks 11-100 | gap 10th-20th |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['family']} | {r['n_tokens']:,} | {r['related_docs_median']:,.0f} / {r['related_docs_mean']:,.1f} "
              f"| {r['source_ranked_first']:.3f} | {r['top10_sharing']:.3f} | {r['ranks_2_10_sharing']:.3f} "
              f"| {r['ranks_11_100_sharing']:.3f} | {r['gap_10_20_median']:.2%} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default=",".join(FAMILIES), help="comma list")
    ap.add_argument("--ndocs", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=None, help="token dimension (default: the family's, 128 for most)")
    ap.add_argument("--nq", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-gt", action="store_true")
    ap.add_argument("--topic-stats", action="store_true",
                    help="write results/family_topics.md: how many of each family's exact neighbours share a topic "
                         "with the query's source document")
    args = ap.parse_args(argv)
    if args.topic_stats:
        import datetime as dt

        import bench_engine as be
        from collection import RESULTS_DIR

        rows = [topic_stats(ensure(name, args.ndocs, args.dim, args.nq, args.seed), args.threads)
                for name in args.family.split(",")]
        git, m = be.git_info(), be.machine_info(args.threads)
        stamp = (f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} | git {git.get('commit', '?')[:10]} | "
                 f"{m.get('cpu')} ({m.get('cpu_count')} cores) | seed {args.seed}, {args.nq} queries | Command: "
                 f"`.venv/bin/python benchmarks/families.py {' '.join(argv if argv is not None else sys.argv[1:])}`")
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / "family_topics.json").write_text(json.dumps({"stamp": stamp, "rows": rows}, indent=1))
        (RESULTS_DIR / "family_topics.md").write_text(topic_report(rows, stamp))
        print(topic_report(rows, stamp))
        return 0
    for name in args.family.split(","):
        coll = ensure(name, args.ndocs, args.dim, args.nq, args.seed)
        print(f"[families] {coll.path}: {coll.n_docs} docs, {coll.n_tokens} tokens", flush=True)
        if not args.no_gt:
            exact_topk_cached(coll, 10, threads=args.threads)
            print(f"[families] {name}: ground truth ready", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
