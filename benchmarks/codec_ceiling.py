"""Prototype 2-bit codecs measured by their exhaustive ceiling: recall@10 of MaxSim over decoded tokens.

A numpy prototype (not the engine's code path) to decide what the codec should become. Every variant
shares the same centroids (plaidx's k-means, int8-rounded as stored) and assignment; only how the
residual is coded changes. Decoded tokens are re-normalised, as plaidx's search does, and every
document that could matter is scored (no search stage), so the figure is the most any search over that code
can reach. "Every document" is approximated by each query's exact top-100 (``--candidates``): a document
outside it reaching the decoded top-10 would need an error far beyond the codec's.

Variants (``--variants``):

- ``lm``: today's codec, per-dimension Lloyd-Max buckets, each coordinate rounded to its nearest
  bucket (minimum squared error of the residual);
- ``cos``: the same buckets and bytes, but codes chosen to maximise the cosine between the decoded,
  re-normalised token and the original (coordinate ascent over each dimension's buckets, ``--passes``
  sweeps). Decoding is unchanged, so this is a build-time change only;
- ``cos_refit``: ``cos`` then the bucket weights refitted to the codes it chose (one more pass);
- ``rot_lm`` / ``rot_cos``: a seeded random rotation of the whole space first (queries rotated the
  same way; dot products unchanged), then ``lm`` / ``cos``;
- ``scale``: ``lm`` codes plus a per-token least-squares scale of the decoded residual, stored as one
  byte (log-quantised, 256 levels over [1/4, 4]): one byte more per token (``scale16``: 16 levels, half a
  byte);
- ``pq``: residual product quantisation at the same bytes (one 8-bit code per 8 / nbits dimensions, faiss);
  ``pq_scale16``: ``pq`` plus the 16-level per-token scale (both levers together); ``opq``, ``opq_scale16``:
  the same after a learned rotation of the residuals (faiss OPQ, d x d floats stored once); ``pqn_scale16``:
  the engine's pq codec (format 5) in prototype: the last sub-vector takes 16 codewords and the scale its
  byte's other nibble, so no byte is added;
- ``pqe``: the engine's pq codec itself (``codec.train_pq``, ``codec.pq_compress``) on these centroids, the
  held-out residuals training it; ``pqe_cos``: its codes and level re-chosen per token by coordinate ascent on
  the cosine of the decoded, re-normalised token and the original (``--passes`` sweeps; the decoder unchanged,
  so a build-time change only); ``pqe_par3``: the same ascent on the squared error plus 3x its squared
  component along the token (ScaNN's score-aware loss); ``pqe_cscale``: a 4-bit log scale per centroid and
  4-dimension sub-vector (from about 80 sampled tokens a centroid, 16 bytes a centroid) divides the residuals
  before the engine's codec trains on and codes them (region-local energy, one table); ``pqe_err0.8``: the
  engine's codec with its error scaled by 0.8 (x + 0.8 (x_hat - x), any factor): not a codec, a yardstick of
  how recall@10 follows the size of the error at its present shape;
- ``rq``: residual (additive) quantisation at the same bytes: d * nbits / 8 stages of 256 full-width codewords,
  each coding what the earlier ones left (faiss ResidualQuantizer, beam ``--rq-beam``). Its codewords are
  full-width, so a lookup table costs stages x 256 x d multiply-adds per query token to build (32x pq's at
  d 128) and the codebooks d * nbits / 8 * 256 * d floats.

    .venv/bin/python benchmarks/codec_ceiling.py --collection benchmarks/results/cache/family_lowrank_n10000_d128_q300_s0

Writes results/codec_ceiling_<name>.json/.md (one row per variant and nlist). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit, prange

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
from collection import (  # noqa: E402
    CACHE_DIR,
    RESULTS_DIR,
    exact_topk_cached,
    load_collection,
    recall_at_k,
)

from plaidx.engine import kernels  # noqa: E402
from plaidx.engine.clustering import Assigner, default_kmeans_sample, default_nlist, train_centroids  # noqa: E402
from plaidx.engine.codec import (  # noqa: E402
    dequantize_centroids,
    pq_compress,
    quantize_centroids,
    train_codebooks,
    train_pq,
)

K = 10


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def bucketize(r: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
    """uint8 (n, d) nearest-bucket codes of residuals r (n, d) under ascending cutoffs (d, nb - 1)."""
    codes = np.zeros(r.shape, np.uint8)
    for b in range(cutoffs.shape[1]):
        codes += (r > cutoffs[:, b][None, :]).astype(np.uint8)  # side matches the kernel's '>' up to ties
    return codes


def decode(cents: np.ndarray, codes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float32 (n, d) centroid rows plus each coordinate's bucket weight (not normalised)."""
    return cents + weights[np.arange(weights.shape[0])[None, :], codes]


def cos_codes(x: np.ndarray, cents: np.ndarray, codes: np.ndarray, weights: np.ndarray, passes: int) -> np.ndarray:
    """Coordinate ascent on cos(c + w[code], x): each dimension's bucket set to the best one given the others."""
    codes = codes.copy()
    nb = weights.shape[1]
    xh = decode(cents, codes, weights)
    a = np.einsum("nd,nd->n", x, xh)
    b = np.einsum("nd,nd->n", xh, xh)
    for _ in range(passes):
        changed = 0
        for j in range(x.shape[1]):
            cur = weights[j][codes[:, j]]
            best_val = a / np.sqrt(b)
            best_k = codes[:, j].copy()
            best_a, best_b = a, b
            for k in range(nb):
                delta = weights[j, k] - cur
                a2 = a + x[:, j] * delta
                b2 = b + 2 * xh[:, j] * delta + delta * delta
                v = a2 / np.sqrt(b2)
                better = v > best_val + 1e-7
                if better.any():
                    best_val = np.where(better, v, best_val)
                    best_k = np.where(better, k, best_k)
                    best_a = np.where(better, a2, best_a)
                    best_b = np.where(better, b2, best_b)
            moved = best_k != codes[:, j]
            changed += int(moved.sum())
            codes[:, j] = best_k
            xh[:, j] = cents[:, j] + weights[j][best_k]
            a, b = best_a, best_b
        print(f"    cos pass: {changed} coordinates moved", flush=True)
    return codes


@njit(cache=False)
def _dot(a, b):
    acc = 0.0
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@njit(parallel=True, cache=False)
def _pq_recode(x, c, r, table, levels, codes, cos, lam, passes):
    """Per token: ``passes`` sweeps setting each code byte (then the level) to the best one given the others,
    maximising cos(x, c + s w) (``cos``) or minimising |e|^2 + lam (e . x)^2, e = r - s w."""
    n, d = r.shape
    pb, _, dpb = table.shape
    out = codes.copy()
    for t in prange(n):
        w = np.empty(d, np.float32)
        for p in range(pb):
            b = out[t, p] & 15 if p == pb - 1 else out[t, p]
            w[p * dpb:(p + 1) * dpb] = table[p, b]
        lv = np.int64(out[t, pb - 1] >> 4)
        for it in range(passes + 1):
            if it > 0:
                s = levels[lv]
                e = r[t] - s * w
                h = c[t] + s * w
                epar, a_, b_ = _dot(e, x[t]), _dot(h, x[t]), _dot(h, h)
                for p in range(pb):
                    o = p * dpb
                    xs = x[t, o:o + dpb]
                    ep0, a0, b0 = _dot(e[o:o + dpb], xs), _dot(h[o:o + dpb], xs), _dot(h[o:o + dpb], h[o:o + dpb])
                    best, bk = 1e300, 0
                    for k in range(16 if p == pb - 1 else 256):
                        ex = ee = hx = hh = 0.0  # no temporaries in the innermost loop
                        for u in range(dpb):
                            ev = r[t, o + u] - s * table[p, k, u]
                            hv = c[t, o + u] + s * table[p, k, u]
                            ex += ev * xs[u]
                            ee += ev * ev
                            hx += hv * xs[u]
                            hh += hv * hv
                        if cos:
                            loss = -(a_ - a0 + hx) / np.sqrt(max(b_ - b0 + hh, 1e-30))
                        else:
                            pe = epar - ep0 + ex
                            loss = ee + lam * pe * pe
                        if loss < best:
                            best, bk = loss, k
                    w[o:o + dpb] = table[p, bk]
                    e[o:o + dpb] = r[t, o:o + dpb] - s * w[o:o + dpb]
                    h[o:o + dpb] = c[t, o:o + dpb] + s * w[o:o + dpb]
                    epar += _dot(e[o:o + dpb], xs) - ep0
                    a_ += _dot(h[o:o + dpb], xs) - a0
                    b_ += _dot(h[o:o + dpb], h[o:o + dpb]) - b0
                    out[t, p] = (out[t, p] & 0xF0) | bk if p == pb - 1 else bk
            best = 1e300
            rw, ww, rx, wx = _dot(r[t], w), _dot(w, w), _dot(r[t], x[t]), _dot(w, x[t])
            cw, cx, cc, rr = _dot(c[t], w), _dot(c[t], x[t]), _dot(c[t], c[t]), _dot(r[t], r[t])
            for li in range(levels.shape[0]):
                sv = levels[li]
                if cos:
                    loss = -(cx + sv * wx) / np.sqrt(max(cc + 2 * sv * cw + sv * sv * ww, 1e-30))
                else:
                    loss = rr - 2 * sv * rw + sv * sv * ww + lam * (rx - sv * wx) ** 2
                if loss < best:
                    best, lv = loss, np.int64(li)
        out[t, pb - 1] = (out[t, pb - 1] & 15) | (lv << 4)
    return out


def engine_pq(variant: str, x, c, codes_c, r, held, args) -> np.ndarray:
    """Decoded (not normalised) tokens of a ``pqe`` variant (see the module docstring)."""
    n, d = r.shape
    div = np.ones((1, d), np.float32)
    if variant == "pqe_cscale":
        nl = int(codes_c.max()) + 1
        samp = np.random.default_rng(args.seed + 1).choice(n, size=min(n, 80 * nl), replace=False)
        e2 = (r[samp] ** 2).reshape(len(samp), d // 4, 4).sum(axis=2)
        tot = np.zeros((nl, d // 4))
        np.add.at(tot, codes_c[samp], e2)
        cnt = np.bincount(codes_c[samp], minlength=nl)[:, None]
        glob = e2.mean(axis=0)
        ls = 0.5 * np.log2((tot + 4 * glob) / (cnt + 4) / glob)  # shrunk to the global energy, relative to it
        lo, hi = np.quantile(ls, [0.005, 0.995])
        lv = np.clip(np.rint((ls - lo) / (hi - lo) * 15), 0, 15)
        div = np.repeat(2.0 ** (lo + lv / 15 * (hi - lo)), 4, axis=1).astype(np.float32)[codes_c]
    rn = r / div
    table, levels = train_pq(rn[held], args.nbits, args.seed)
    codes = np.concatenate([pq_compress(rn[i:i + (1 << 18)], table, levels) for i in range(0, n, 1 << 18)])
    if variant in ("pqe_cos", "pqe_par3"):
        codes = _pq_recode(x, c, r, table, levels, codes, variant == "pqe_cos", 3.0, args.passes)
    # the engine's decoder on zero centroids gives each token's scaled codewords, its coded residual
    rh = kernels.decompress(np.zeros(n, np.uint16), codes, np.zeros((1, d), np.float32), (table, levels),
                            args.nbits, False)
    dec = c + div * rh
    if variant.startswith("pqe_err"):
        dec = x + float(variant[len("pqe_err"):]) * (dec - x)
    return dec


def refit(r: np.ndarray, codes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    w = weights.copy()
    for j in range(r.shape[1]):
        cnt = np.bincount(codes[:, j], minlength=w.shape[1])
        s = np.bincount(codes[:, j], weights=r[:, j], minlength=w.shape[1])
        w[j] = np.where(cnt > 0, s / np.maximum(cnt, 1), w[j])
    return np.sort(w, axis=1).astype(np.float32)


def rescore(queries: np.ndarray, dec: np.ndarray, offsets: np.ndarray, cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top-K of MaxSim over decoded tokens, scoring only each query's candidates (exact top-100 documents)."""
    ids = np.empty((len(queries), K), np.int64)
    for i, (q, cand) in enumerate(zip(queries, cands)):
        toks = np.concatenate([np.arange(offsets[c], offsets[c + 1]) for c in cand])
        starts = np.concatenate([[0], np.cumsum(offsets[cand + 1] - offsets[cand])[:-1]])
        sc = np.maximum.reduceat(q @ dec[toks].T, starts, axis=1).sum(axis=0)
        order = np.lexsort((cand, -sc))[:K]
        ids[i] = cand[order]
    return np.zeros((len(queries), K), np.float32), ids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--collection", required=True)
    ap.add_argument("--name", default=None)
    ap.add_argument("--nlist", default="default", help="comma list; 'default' = plaidx's default_nlist")
    ap.add_argument("--nbits", type=int, default=2)
    ap.add_argument("--variants", default="lm,cos,cos_refit,rot_lm,rot_cos,scale")
    ap.add_argument("--nq", type=int, default=300, help="queries scored (the first nq)")
    ap.add_argument("--candidates", type=int, default=100,
                    help="documents scored per query: its exact top-N (a document outside the exact top-100 "
                         "reaching the decoded top-10 is rare; this keeps the prototype affordable)")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--rq-beam", type=int, default=1, help="beam of the rq variant's encoder (faiss max_beam_size)")
    ap.add_argument("--centroid-bits", default="8", help="stored centroid precision, comma list of 8 and 4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="main", help="output suffix")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    coll = load_collection(args.collection)
    name = args.name or Path(args.collection).name
    _, deep = exact_topk_cached(coll, 100, threads=args.threads)
    deep = deep[: args.nq]
    truth = deep[:, :K]
    cands = deep[:, : args.candidates]
    queries = np.asarray(coll.queries[: args.nq], dtype=np.float32)
    values = np.asarray(coll.values, dtype=np.float32)
    n, d = values.shape
    rng = np.random.default_rng(args.seed)
    rows: list[dict] = []
    held = rng.choice(n, size=min(n // 20, 1 << 16), replace=False)
    for nl_s in args.nlist.split(","):
        nl = default_nlist(n) if nl_s == "default" else int(nl_s)
        t0 = time.perf_counter()
        raw_p = CACHE_DIR / "codec_ceiling" / f"{name}_nl{nl}_s{args.seed}.npy"
        if raw_p.exists():
            raw = np.load(raw_p)
        else:
            sample = values[np.sort(rng.choice(n, size=default_kmeans_sample(nl, n), replace=False))]
            raw = train_centroids(sample, nl, 4, args.seed, verbose=False)
            raw_p.parent.mkdir(parents=True, exist_ok=True)
            np.save(raw_p, raw)
        print(f"[ceiling] nlist {nl}: k-means {time.perf_counter() - t0:.0f}s", flush=True)
        for cbits in [int(b) for b in args.centroid_bits.split(",")]:
            rows += run_variants(args, values, coll, raw, cbits, cands, truth, queries, held)
            write(args, name, rows, n, d, len(queries))
    return 0


def run_variants(args, values, coll, raw, cbits, cands, truth, queries, held) -> list[dict]:
    n, d = values.shape
    nl = raw.shape[0]
    rows = []
    if True:
        if cbits == 4:  # int4 rows with a float32 scale each (max |c| / 7)
            sc = np.abs(raw).max(axis=1, keepdims=True) / 7.0
            cents = (np.clip(np.rint(raw / sc), -7, 7) * sc).astype(np.float32)
        else:  # int8 rows with a power-of-two scale each (format 2)
            cents = dequantize_centroids(*quantize_centroids(raw))
        t0 = time.perf_counter()
        codes_c = np.concatenate([Assigner(cents).assign(values[i:i + (1 << 18)]) for i in range(0, n, 1 << 18)])
        cn = cents[codes_c.astype(np.intp)]
        print(f"[ceiling] nlist {nl}, centroid bits {cbits}: assignment {time.perf_counter() - t0:.0f}s", flush=True)
        table_bytes = (nl * (d // 2 + 4) if cbits == 4 else nl * (d + 4)) if args.nbits <= 2 else nl * d * 2
        for variant in args.variants.split(","):
            t0 = time.perf_counter()
            x, c, q = values, cn, queries
            if variant.startswith("rot"):
                rot = np.linalg.qr(np.random.default_rng(args.seed + 7).standard_normal((d, d)))[0].astype(np.float32)
                x, c, q = values @ rot, cn @ rot, queries @ rot
            r = x - c
            extra = 0.0
            if variant == "rq":  # additive: every stage a full-width codebook of 256 words
                import faiss

                rq = faiss.ResidualQuantizer(d, d * args.nbits // 8, 8)
                rq.max_beam_size = args.rq_beam
                rq.train(np.ascontiguousarray(r[held]))
                dec = np.concatenate([rq.decode(rq.compute_codes(np.ascontiguousarray(r[i:i + (1 << 18)])))
                                      for i in range(0, n, 1 << 18)]) + c
                extra = (d * args.nbits // 8) * 256 * d * 4 / n  # float32 codebooks
            if variant.startswith("pqe"):
                dec = engine_pq(variant, x, c, codes_c.astype(np.intp), r, held, args)
                extra = (256 * d + 16) * 4 / n + (d // 8 / n * nl if variant == "pqe_cscale" else 0.0)
            elif variant.startswith(("pq", "opq")):  # residual PQ: one 8-bit code per 8 / nbits dimensions
                import faiss

                sub = 8 // args.nbits
                opq = None
                if variant.startswith("opq"):  # a learned rotation of the residuals first (faiss OPQ)
                    opq = faiss.OPQMatrix(d, d // sub)
                    opq.train(np.ascontiguousarray(r[held]))

                def fwd(y, m=opq):
                    return m.apply_py(np.ascontiguousarray(y)) if m is not None else y

                def back(y, m=opq):
                    return m.reverse_transform(y) if m is not None else y

                if variant.startswith("pqn"):  # the last sub-quantizer 4-bit: its other nibble holds the scale
                    pq = faiss.ProductQuantizer(d - sub, d // sub - 1, 8)
                    last = faiss.ProductQuantizer(sub, 1, 4)
                    pq.cp.seed = last.cp.seed = args.seed
                    pq.train(np.ascontiguousarray(r[held][:, : d - sub]))
                    last.train(np.ascontiguousarray(r[held][:, d - sub:]))

                    def enc(y, pq=pq, last=last, sub=sub):
                        a = pq.decode(pq.compute_codes(np.ascontiguousarray(y[:, : d - sub])))
                        b = last.decode(last.compute_codes(np.ascontiguousarray(y[:, d - sub:])))
                        return np.concatenate([a, b], axis=1)

                    dec = np.concatenate([enc(r[i:i + (1 << 18)]) for i in range(0, n, 1 << 18)]) + c
                else:
                    pq = faiss.ProductQuantizer(d, d // sub, 8)
                    pq.cp.seed = args.seed
                    pq.train(np.ascontiguousarray(fwd(r[held])))
                    dec = np.concatenate([back(pq.decode(pq.compute_codes(np.ascontiguousarray(fwd(r[i:i + (1 << 18)])))))
                                          for i in range(0, n, 1 << 18)]) + c
                extra = (pq.M * pq.ksub * sub + (d * d if opq is not None else 0)) * 4 / n  # float32 codebooks
            if not variant.startswith(("pq", "opq", "rq")):  # the per-dimension codec (the others decoded above)
                cutoffs, weights = train_codebooks(r[held], args.nbits)
                codes = bucketize(r, cutoffs)
                if variant.endswith("cos") or variant == "cos_refit":
                    codes = cos_codes(x, c, codes, weights, args.passes)
                    if variant == "cos_refit":
                        weights = refit(r, codes, weights)
                        codes = cos_codes(x, c, codes, weights, 1)
                dec = decode(c, codes, weights)
            if variant == "gamma":  # per-dimension weights scaled so that r . r_hat is unbiased (free)
                rh = dec - c
                weights = weights * (np.mean(r * r, axis=0) / np.maximum(np.mean(r * rh, axis=0), 1e-12))[:, None]
                dec = decode(c, codes, weights)
            if variant.startswith("scale") or variant.endswith("_scale16"):
                rh = dec - c
                s = np.einsum("nd,nd->n", r, rh) / np.maximum(np.einsum("nd,nd->n", rh, rh), 1e-12)
                levels = {"scale": 256, "scale16": 16, "scale8": 8, "scale_exact": 0}[variant.split("_", 1)[-1]
                                                                                    if "pq" in variant
                                                                                    else variant]
                if levels:  # log-quantised over the 0.5%-99.5% range of the held-out scales
                    lo, hi = np.log2(np.clip(np.quantile(s[held], [0.005, 0.995]), 1e-3, None))
                    lv = np.clip(np.rint((np.log2(np.maximum(s, 1e-3)) - lo) / (hi - lo) * (levels - 1)), 0, levels - 1)
                    s = 2.0 ** (lo + lv / (levels - 1) * (hi - lo))
                    print(f"    scale range 2^[{lo:.2f}, {hi:.2f}], median {np.median(s):.3f}", flush=True)
                dec = c + rh * s[:, None].astype(np.float32)
                extra += 0.0 if variant.startswith("pqn") else {256: 1.0, 16: 0.5, 8: 0.375, 0: 4.0}[levels]
            dec = unit(dec)
            sq_err = float(np.mean(np.sum((dec - x) ** 2, axis=1)))
            _, ids = rescore(q, dec, coll.offsets, cands)
            bpt = 2 + d * args.nbits / 8 + extra + table_bytes / n
            rows.append({"nlist": nl, "centroid_bits": cbits, "variant": variant, "recall": recall_at_k(ids, truth, K),
                         "sq_error": sq_err, "codec_bytes_per_token": bpt, "s": round(time.perf_counter() - t0, 1)})
            print(f"[ceiling] {rows[-1]}", flush=True)
            del dec, r
    return rows


def write(args, name, rows, n, d, nq) -> None:
    out = RESULTS_DIR / f"codec_ceiling_{name}_nb{args.nbits}_{args.tag}"
    meta = {"collection": str(args.collection), "n_tokens": n, "dim": d, "nq": nq, "k": K, "nbits": args.nbits,
            "candidates": args.candidates, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "cli": sys.argv[1:]}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# 2-bit codec prototypes, exhaustive ceiling: {name} ({n:,} tokens, d {d}, {nq} queries, "
             f"nbits {args.nbits})", "",
             "recall@10 of MaxSim over decoded, re-normalised tokens (each query's exact top-"
             f"{args.candidates} documents rescored) against exact MaxSim over the originals. Bytes: 2-byte centroid "
             "code + packed residual (+ scale) + the centroid table spread over the tokens (the IVF and document "
             "arrays come on top, ~0.3 B/token).", "",
             "| nlist | centroid bits | variant | recall@10 | squared error | codec bytes/token |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['nlist']} | {r['centroid_bits']} | {r['variant']} | {r['recall']:.3f} | {r['sq_error']:.4f} | "
              f"{r['codec_bytes_per_token']:.2f} |" for r in rows]
    lines += ["", f"Command: `.venv/bin/python benchmarks/codec_ceiling.py {' '.join(sys.argv[1:])}`"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
