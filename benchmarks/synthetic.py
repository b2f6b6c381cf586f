"""Seeded synthetic ColBERT-like collections with real cluster structure, cached as .npy (bounded memory).

Model (not isotropic noise):
- ``n_topics`` unit topic centres in R^d, sharing a common direction (``anisotropy``), with Zipf popularity (p_t ~ 1 / t^zipf), like the skewed token
  distribution of text (a few very common "words", a long tail).
- Each document draws a few topics (1 + Poisson(2), at most 6) by popularity, mixes them with Dirichlet
  weights, and perturbs each chosen centre slightly (its own "sense" of the topic, ``doc_shift``).
- Each token is a noisy copy of one of its document's topic centres, re-normalised (``noise``).
- Lengths are log-normal, mean about ``mean_len`` (default 100), clipped to [8, 4 * mean_len].
- A query is 32 tokens built from a source document: most are noisy copies of the source's tokens
  (``q_noise``), a quarter are noisy copies of the source's topic centres (words not in the document).

Usage::

    .venv/bin/python benchmarks/synthetic.py --ndocs 10000 --nq 300        # generate + ground truth

Library::

    coll = synthetic.ensure(n_docs=10_000)            # benchmarks.collection.Collection, memory-mapped
    scores, ids = synthetic.exact_topk(coll.queries, coll, k=10)   # exact MaxSim ground truth, cached
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collection import (  # noqa: E402
    CACHE_DIR,
    Collection,
    exact_scores,
    exact_topk_cached,
    is_complete,
    load_collection,
    topk_from_scores,
    write_meta,
)

Q_TOKENS = 32
_CHUNK_DOCS = 1024  # part of the seeding scheme: do not change (chunk c uses rng([seed, 1, c]))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def default_params(n_docs: int = 10_000, dim: int = 128, nq: int = 300, seed: int = 0) -> dict:
    return {"n_docs": n_docs, "dim": dim, "nq": nq, "seed": seed, "n_topics": 4096, "zipf": 1.0,
            "anisotropy": 0.4, "mean_len": 100, "len_sigma": 0.6, "noise": 0.6, "doc_shift": 0.25, "q_noise": 0.35,
            "q_topic_frac": 0.25, "values_dtype": "float32"}


def cache_path(p: dict) -> Path:
    return CACHE_DIR / f"synthetic_n{p['n_docs']}_d{p['dim']}_q{p['nq']}_s{p['seed']}"


def _noisy(rng: np.random.Generator, base: np.ndarray, sigma: float) -> np.ndarray:
    """unit(base + sigma * z / sqrt(d)): cosine to base about 1 / sqrt(1 + sigma^2)."""
    d = base.shape[-1]
    return _unit(base + (sigma / np.sqrt(d)) * rng.standard_normal(base.shape, dtype=np.float32))


class _Model:
    def __init__(self, p: dict):
        self.p = p
        rng = np.random.default_rng([p["seed"], 0])
        # A shared direction makes the space anisotropic like trained encoders (centres' mean cosine
        # about anisotropy^2 / (1 + anisotropy^2)).
        common = _unit(rng.standard_normal(p["dim"], dtype=np.float32))
        z = rng.standard_normal((p["n_topics"], p["dim"]), dtype=np.float32) / np.sqrt(p["dim"])
        self.centres = _unit(z + p["anisotropy"] * common)
        pop = 1.0 / np.arange(1, p["n_topics"] + 1) ** p["zipf"]
        self.popularity = pop / pop.sum()
        mu = np.log(p["mean_len"]) - p["len_sigma"] ** 2 / 2
        lens = np.rint(rng.lognormal(mu, p["len_sigma"], size=p["n_docs"]))
        self.lengths = np.clip(lens, 8, 4 * p["mean_len"]).astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def doc_topics(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        n = int(min(6, 1 + rng.poisson(2.0)))
        topics = rng.choice(self.p["n_topics"], size=n, replace=False, p=self.popularity)
        return topics, rng.dirichlet(np.ones(n))

    def chunk(self, c: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Documents of chunk c (and each one's perturbed topic centres), deterministic per chunk."""
        rng = np.random.default_rng([self.p["seed"], 1, c])
        docs, senses = [], []
        for i in range(c * _CHUNK_DOCS, min(self.p["n_docs"], (c + 1) * _CHUNK_DOCS)):
            topics, w = self.doc_topics(rng)
            sense = _noisy(rng, self.centres[topics], self.p["doc_shift"])
            which = rng.choice(len(topics), size=int(self.lengths[i]), p=w)
            docs.append(_noisy(rng, sense[which], self.p["noise"]))
            senses.append(sense)
        return docs, senses


def generate(p: dict, out: Path, log: bool = True) -> Collection:
    """Write the collection described by ``p`` into ``out`` chunk by chunk (memory ~ one chunk)."""
    out.mkdir(parents=True, exist_ok=True)
    m = _Model(p)
    n_tok = int(m.offsets[-1])
    # Appended chunk by chunk with plain writes (no memory map), so memory stays at about one chunk.
    f = open(out / "values.npy.tmp", "wb")
    vdt = np.dtype(p["values_dtype"])  # float16 halves the disk of a 100M-token collection
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(vdt),
                                             "fortran_order": False, "shape": (n_tok, p["dim"])})
    qrng = np.random.default_rng([p["seed"], 2])
    sources = np.sort(qrng.choice(p["n_docs"], size=p["nq"], replace=False))
    queries = np.empty((p["nq"], Q_TOKENS, p["dim"]), np.float32)
    n_topic_q = int(round(p["q_topic_frac"] * Q_TOKENS))
    t0 = time.perf_counter()
    n_chunks = -(-p["n_docs"] // _CHUNK_DOCS)
    for c in range(n_chunks):
        docs, senses = m.chunk(c)
        lo = c * _CHUNK_DOCS
        block = np.concatenate(docs)
        assert len(block) == m.offsets[lo + len(docs)] - m.offsets[lo]
        block.astype(vdt, copy=False).tofile(f)
        for qi in np.flatnonzero((sources >= lo) & (sources < lo + len(docs))):
            doc, sense = docs[sources[qi] - lo].astype(vdt).astype(np.float32), senses[sources[qi] - lo]
            qr = np.random.default_rng([p["seed"], 3, int(qi)])
            n_doc_q = Q_TOKENS - n_topic_q
            picks = qr.choice(len(doc), size=n_doc_q, replace=len(doc) < n_doc_q)
            from_doc = _noisy(qr, doc[picks], p["q_noise"])
            from_topic = _noisy(qr, sense[qr.integers(0, len(sense), size=n_topic_q)], p["noise"])
            queries[qi] = np.concatenate([from_doc, from_topic])
        if log and (c % 10 == 0 or c == n_chunks - 1):
            print(f"[synthetic] docs {lo + len(docs)}/{p['n_docs']} {time.perf_counter() - t0:.1f}s", flush=True)
    f.close()
    os.replace(out / "values.npy.tmp", out / "values.npy")
    np.save(out / "offsets.npy", m.offsets)
    np.save(out / "queries.npy", queries)
    np.save(out / "sources.npy", sources.astype(np.int64))
    write_meta(out, {"kind": "synthetic", **p, "n_tokens": n_tok, "q_tokens": Q_TOKENS,
                     "mean_len_actual": float(m.lengths.mean()), "generate_s": round(time.perf_counter() - t0, 1)})
    return load_collection(out)


def ensure(n_docs: int = 10_000, dim: int = 128, nq: int = 300, seed: int = 0, log: bool = True,
           **overrides) -> Collection:
    """The cached collection for these parameters, generated on first use."""
    p = default_params(n_docs, dim, nq, seed)
    unknown = set(overrides) - set(p)
    if unknown:
        raise TypeError(f"unknown synthetic parameters: {sorted(unknown)}")
    p.update(overrides)
    path = cache_path(p)
    if overrides:
        path = path.with_name(path.name + "_" + "_".join(f"{k}{v}" for k, v in sorted(overrides.items())))
    if is_complete(path):
        return load_collection(path)
    return generate(p, path, log=log)


def generate_docs(n_docs: int = 10_000, dim: int = 128, seed: int = 0) -> list[np.ndarray]:
    """Documents as a list of float32 (n_i, d) arrays (in memory; use ``ensure`` for large n)."""
    coll = ensure(n_docs=n_docs, dim=dim, seed=seed)
    return [np.array(coll.doc(i)) for i in range(coll.n_docs)]


def generate_queries(n_docs: int = 10_000, dim: int = 128, nq: int = 300, seed: int = 0) -> np.ndarray:
    """float32 (nq, 32, d) queries of the collection ``ensure(n_docs, dim, nq, seed)``."""
    return ensure(n_docs=n_docs, dim=dim, nq=nq, seed=seed).queries


def exact_topk(queries: np.ndarray, docs, k: int = 10, *, threads: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Exact MaxSim top-k over uncompressed float32 embeddings.

    ``docs`` is a Collection (result cached in its folder when ``queries`` are its own queries) or a list
    of float32 (n_i, d) arrays. Returns float32 (nq, k) scores and int64 (nq, k) ids, best first, ties
    by lower id.
    """
    if isinstance(docs, Collection):
        if queries is docs.queries or np.array_equal(queries, docs.queries):
            return exact_topk_cached(docs, k, threads=threads)
        values, offsets = docs.values, docs.offsets
    else:
        lengths = np.array([len(x) for x in docs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        values = np.concatenate([np.asarray(x, dtype=np.float32) for x in docs])
    return topk_from_scores(exact_scores(queries, values, offsets, threads=threads, log=False), k)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="generate a cached synthetic collection and its ground truth")
    ap.add_argument("--ndocs", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--nq", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mean-len", type=int, default=None, help="mean document length (default 100)")
    ap.add_argument("--values-dtype", choices=["float32", "float16"], default="float32",
                    help="storage of the token embeddings (float16 halves the disk of a large collection)")
    ap.add_argument("--no-gt", action="store_true", help="skip the exact ground truth")
    args = ap.parse_args(argv)
    extra = {} if args.mean_len is None else {"mean_len": args.mean_len}
    if args.values_dtype != "float32":
        extra["values_dtype"] = args.values_dtype
    coll = ensure(args.ndocs, args.dim, args.nq, args.seed, **extra)
    print(f"[synthetic] {coll.path}: {coll.n_docs} docs, {coll.n_tokens} tokens, d {coll.dim}, "
          f"{len(coll.queries)} queries")
    if not args.no_gt:
        t0 = time.perf_counter()
        exact_topk(coll.queries, coll, args.k, threads=args.threads)
        print(f"[synthetic] ground truth ready ({time.perf_counter() - t0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
