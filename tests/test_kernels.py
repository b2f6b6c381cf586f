"""Kernels: the native core against the numba/numpy reference, kernel properties and input checks."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from plaidx.engine import cellq
from plaidx.engine import reference as ref

try:
    from plaidx import _core
    _CORE_ERROR = ""
except ImportError as exc:  # pragma: no cover - depends on the build
    _core = None
    _CORE_ERROR = f"{type(exc).__name__}: {exc}"

native = pytest.mark.skipif(_core is None, reason=f"plaidx._core is not built ({_CORE_ERROR}); build it with "
                                                  "`python setup.py build_ext --inplace`")
BACKENDS = [pytest.param(ref, id="reference"), pytest.param(_core, id="native", marks=native)]
NBITS = [1, 2, 4, 8]
DIMS = [64, 96, 128]
HYP = settings(max_examples=30, deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.too_slow])
NO_MASK = np.zeros(0, np.uint8)


# ------------------------------------------------------------------------------------------- helpers
def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)).astype(np.float32)


def make_collection(seed: int, ndocs: int = 60, d: int = 64, nbits: int = 2, nlist: int = 16,
                    max_len: int = 24, quantize: bool = False) -> dict:
    """A random compressed collection (no empty documents) with its inverted file, built by the reference."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, max_len + 1, ndocs)
    offsets = np.zeros(ndocs + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    n = int(offsets[-1])
    centroids = rng.standard_normal((nlist, d))
    if quantize:  # coarse values make equal scores (ties) common
        centroids = np.round(centroids * 2) / 2
    centroids = _unit(centroids)
    nb = 1 << nbits
    cutoffs = np.sort(rng.standard_normal((d, nb - 1)) * 0.05, axis=1).astype(np.float32)
    weights = np.sort(rng.standard_normal((d, nb)) * 0.05, axis=1).astype(np.float32)
    if quantize:
        weights[:] = 0
    codes = rng.integers(0, nlist, n).astype(np.uint16 if nlist <= 1 << 16 else np.uint32)
    packed = rng.integers(0, 256, (n, d * nbits // 8)).astype(np.uint8)
    ivf, ivf_offsets = ref.build_ivf(codes, offsets, nlist)
    return dict(codes=codes, packed=packed, doc_offsets=offsets, centroids=centroids, cutoffs=cutoffs,
                weights=weights, nbits=nbits, ivf=ivf, ivf_offsets=ivf_offsets, ndocs=ndocs, nlist=nlist, d=d)


def make_queries(seed: int, col: dict, nq: int = 3, qlen: int = 8, quantize: bool = False):
    rng = np.random.default_rng(seed + 10_000)
    Q = rng.standard_normal((nq, qlen, col["d"]))
    if quantize:
        Q = np.round(Q * 2) / 2
    Q = _unit(Q)
    S = np.ascontiguousarray(Q @ col["centroids"].T)
    return Q, S


def run_search(mod, Q, S, col, allowed=NO_MASK, nprobe=2, threshold=0.0, ndocs=20, n_exact=8, k=5, **kw):
    c = col
    return mod.search(Q, S, c["codes"], c["packed"], c["doc_offsets"], c["ivf"], c["ivf_offsets"], c["centroids"],
                      c["weights"], c["nbits"], allowed, nprobe, threshold, ndocs, n_exact, k, **kw)


def run_exact(mod, Q, col, allowed=NO_MASK, k=5, **kw):
    c = col
    return mod.exact_search(Q, c["codes"], c["packed"], c["doc_offsets"], c["centroids"], c["weights"], c["nbits"],
                            allowed, k, **kw)


def assert_topk_equivalent(a, b, tol: float = 1e-4) -> None:
    """Tie-aware equality of (scores, docs) results of two backends.

    Scores agree within tol rank by rank (padding exactly); a document must match wherever its score
    is more than tol away from its neighbours' (a near-tie may be ordered either way by rounding).
    The last rank is only checked when it is followed by padding (its successor is unknown otherwise).
    """
    (sa, da), (sb, db) = a, b
    assert sa.shape == sb.shape == da.shape == db.shape
    assert sa.dtype == sb.dtype == np.float32 and da.dtype == db.dtype == np.int64
    np.testing.assert_array_equal(np.isneginf(sa), np.isneginf(sb))
    np.testing.assert_array_equal(da == -1, np.isneginf(sa))
    np.testing.assert_array_equal(db == -1, np.isneginf(sb))
    fin = np.isfinite(sa)
    np.testing.assert_allclose(sa[fin], sb[fin], rtol=1e-5, atol=tol)
    k = sa.shape[1]
    for q in range(sa.shape[0]):
        row = sa[q].astype(np.float64)
        for r in range(k):
            if not np.isfinite(row[r]):
                break
            prev_gap = row[r - 1] - row[r] if r > 0 else np.inf
            if r + 1 < k:
                next_gap = row[r] - row[r + 1] if np.isfinite(row[r + 1]) else np.inf
            else:
                next_gap = 0.0  # unknown successor
            if min(prev_gap, next_gap) > tol:
                assert da[q, r] == db[q, r], f"query {q} rank {r}: doc {da[q, r]} != {db[q, r]}"


def unpack_codes(packed: np.ndarray, d: int, nbits: int) -> np.ndarray:
    """Independent unpacking of the contract's bit layout: dimension j at byte j*nbits//8, bit j*nbits%8."""
    j = np.arange(d)
    return (packed[:, (j * nbits) // 8] >> ((j * nbits) % 8)) & ((1 << nbits) - 1)


# -------------------------------------------------------------------------------- native vs reference
@native
@pytest.mark.parametrize("nlist,dtype", [(5000, np.uint16), (70000, np.uint32)])
def test_ivf_and_doc_cells_in_parts_are_the_serial_ones(nlist, dtype):
    """From 2**20 tokens (pairs) a part, the inverted file and its transpose are built in parts, one per
    thread: the same arrays as one thread and the reference, with uneven documents (a few 20,000 tokens long),
    cells no token uses, and a part boundary inside a run of equal codes."""
    rng = np.random.default_rng(11)
    lens = rng.integers(1, 120, 40_000)
    lens[[5, 17_000, 39_999]] = 20_000
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    n = int(offsets[-1])
    codes = rng.integers(0, nlist - 7, n).astype(dtype)  # the last 7 cells empty
    codes[offsets[17_000]:offsets[17_001]] = 3  # one long document in one cell
    ndocs = len(lens)
    want = ref.build_ivf(codes, offsets, nlist)
    want_cells = ref.doc_cells(*want, ndocs)
    for threads in (1, 2, 3):
        got = _core.build_ivf(codes, offsets, nlist, num_threads=threads)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)
        cells = _core.doc_cells(*got, ndocs, num_threads=threads)
        for g, w in zip(cells, want_cells):
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)
    bad = codes.copy()
    bad[n - 5] = nlist  # in the last part
    with pytest.raises(ValueError, match=f"centroid id {nlist} at token {n - 5} is >= nlist"):
        _core.build_ivf(bad, offsets, nlist, num_threads=3)
    ivf, ivf_offsets = want
    wrong = ivf.copy()
    wrong[-1] = ndocs
    with pytest.raises(ValueError, match="outside \\[0, ndocs\\)"):
        _core.doc_cells(wrong, ivf_offsets, ndocs, num_threads=3)
    for mod in (ref, _core):
        with pytest.raises(ValueError, match="num_threads"):
            mod.build_ivf(codes, offsets, nlist, num_threads=-1)
        with pytest.raises(ValueError, match="num_threads"):
            mod.doc_cells(ivf, ivf_offsets, ndocs, num_threads=-1)


@native
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("nbits", NBITS)
def test_codec_and_ivf_match_reference(nbits, d):
    col = make_collection(nbits * 1000 + d, ndocs=80, d=d, nbits=nbits, nlist=32)
    rng = np.random.default_rng(d + nbits)
    res = (rng.standard_normal((500, d)) * 0.06).astype(np.float32)
    res[0, :] = col["cutoffs"][:, 0]  # values exactly on a cutoff fall in the upper bucket
    np.testing.assert_array_equal(_core.compress(res, col["cutoffs"], nbits), ref.compress(res, col["cutoffs"], nbits))
    args = (col["codes"], col["packed"], col["centroids"], col["weights"], nbits)
    # a single float addition per value: bit-identical without normalization
    np.testing.assert_array_equal(_core.decompress(*args, False), ref.decompress(*args, False))
    np.testing.assert_allclose(_core.decompress(*args, True), ref.decompress(*args, True), rtol=1e-5, atol=1e-6)
    for got, want in zip(_core.build_ivf(col["codes"], col["doc_offsets"], 32),
                         ref.build_ivf(col["codes"], col["doc_offsets"], 32)):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


@native
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("nbits", NBITS)
def test_search_matches_reference(nbits, d):
    col = make_collection(7 * nbits + d, ndocs=120, d=d, nbits=nbits, nlist=24, max_len=30)
    Q, S = make_queries(d, col, nq=3, qlen=9)
    for params in [dict(nprobe=2, threshold=0.0, ndocs=30, n_exact=10, k=5),
                   dict(nprobe=3, threshold=0.2, ndocs=200, n_exact=200, k=12),
                   dict(nprobe=1, threshold=-np.inf, ndocs=4, n_exact=2, k=6),
                   dict(nprobe=4, threshold=0.35, ndocs=500, n_exact=3, k=3),  # step 4 decides
                   dict(nprobe=4, threshold=10.0, ndocs=500, n_exact=4, k=4),  # every cell pruned
                   dict(nprobe=4, threshold=10.0, ndocs=5, n_exact=3, k=3),  # ... and the lowest ids kept
                   dict(nprobe=4, threshold=-np.inf, ndocs=5, n_exact=3, k=3)]:  # none: ranked by full scores
        assert_topk_equivalent(run_search(_core, Q, S, col, **params), run_search(ref, Q, S, col, **params))
    assert_topk_equivalent(run_exact(_core, Q, col, k=7), run_exact(ref, Q, col, k=7))
    values = ref.decompress(col["codes"], col["packed"], col["centroids"], col["weights"], nbits, True)
    np.testing.assert_allclose(_core.maxsim(Q, values, col["doc_offsets"]), ref.maxsim(Q, values, col["doc_offsets"]),
                               rtol=1e-5, atol=1e-5)


@native
@HYP
@given(seed=st.integers(0, 2**31 - 1), nbits=st.sampled_from(NBITS), d=st.sampled_from([8, 16, 64]),
       ndocs=st.integers(1, 25), nlist=st.integers(1, 12), qlen=st.integers(1, 11), nq=st.integers(1, 3),
       nprobe=st.integers(1, 14), threshold=st.sampled_from([-np.inf, -0.2, 0.0, 0.3, 2.0]),
       keep=st.integers(1, 30), n_exact=st.integers(1, 30), k=st.integers(1, 30), quantize=st.booleans(),
       masked=st.booleans(), given=st.booleans(), max_list=st.integers(0, 12))
def test_search_matches_reference_hypothesis(seed, nbits, d, ndocs, nlist, qlen, nq, nprobe, threshold, keep,
                                             n_exact, k, quantize, masked, given, max_list):
    col = make_collection(seed, ndocs=ndocs, d=d, nbits=nbits, nlist=nlist, max_len=12, quantize=quantize)
    Q, S = make_queries(seed, col, nq=nq, qlen=qlen, quantize=quantize)
    rng = np.random.default_rng(seed)
    allowed = (rng.random(ndocs) < 0.6).astype(np.uint8) if masked else NO_MASK
    params = dict(nprobe=nprobe, threshold=threshold, ndocs=keep, n_exact=n_exact, k=k, max_list=max_list)
    if given:  # steps 1-2 given: a random subset of the documents
        params["candidates"] = np.flatnonzero(rng.random(ndocs) < 0.5).astype(np.int64)
    assert_topk_equivalent(run_search(_core, Q, S, col, allowed, **params),
                           run_search(ref, Q, S, col, allowed, **params))
    assert_topk_equivalent(run_exact(_core, Q, col, allowed, k=k), run_exact(ref, Q, col, allowed, k=k))


@native
@HYP
@given(data=st.data(), nbits=st.sampled_from(NBITS), d=st.sampled_from([8, 16, 24]), n=st.integers(0, 20))
def test_compress_matches_reference_on_any_floats(data, nbits, d, n):
    res = data.draw(hnp.arrays(np.float32, (n, d), elements=st.floats(width=32, allow_nan=True)))
    cut = data.draw(hnp.arrays(np.float32, (d, (1 << nbits) - 1),
                               elements=st.floats(-2, 2, width=32, allow_subnormal=False)))
    cut = np.sort(cut, axis=1)
    np.testing.assert_array_equal(_core.compress(res, cut, nbits), ref.compress(res, cut, nbits))


@native
@HYP
@given(seed=st.integers(0, 2**31 - 1), d=st.sampled_from([8, 64, 96]), nq=st.integers(0, 3),
       qlen=st.integers(1, 40), lens=st.lists(st.integers(0, 30), min_size=0, max_size=12))
def test_maxsim_matches_reference_hypothesis(seed, d, nq, qlen, lens):
    rng = np.random.default_rng(seed)
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    values = rng.standard_normal((int(offsets[-1]), d)).astype(np.float32)
    Q = rng.standard_normal((nq, qlen, d)).astype(np.float32)
    got, want = _core.maxsim(Q, values, offsets), ref.maxsim(Q, values, offsets)
    assert got.shape == want.shape == (nq, len(lens)) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    assert np.all(got[:, np.diff(offsets) == 0] == 0)


@native
@pytest.mark.parametrize("d", DIMS)
def test_centroid_scores_match_reference(d):
    # nlist around the native kernel's 64-cell blocks and 16-lane vectors, qlen around its 6-token tiles
    rng = np.random.default_rng(d)
    for nq in (1, 5):
        for qlen in (1, 7, 32):
            for nlist in (1, 15, 64, 100, 1000):
                Q = _unit(rng.standard_normal((nq, qlen, d)))
                Ct = np.ascontiguousarray(_unit(rng.standard_normal((nlist, d))).T)
                got, want = _core.centroid_scores(Q, Ct), ref.centroid_scores(Q, Ct)
                assert got.shape == want.shape == (nq, qlen, nlist) and got.dtype == want.dtype == np.float32
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
                exact = np.einsum("qaj,jc->qac", Q.astype(np.float64), Ct.astype(np.float64))
                np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-6)
    # small integers: every sum is exact in float32, so any summation order gives the same bits
    Q = rng.integers(-4, 5, (5, 13, d)).astype(np.float32)
    Ct = rng.integers(-4, 5, (d, 333)).astype(np.float32)
    exact = (Q.astype(np.int64).reshape(-1, d) @ Ct.astype(np.int64)).reshape(5, 13, 333)
    np.testing.assert_array_equal(_core.centroid_scores(Q, Ct), exact)
    np.testing.assert_array_equal(ref.centroid_scores(Q, Ct), exact)
    # the S that search expects
    col = make_collection(d, ndocs=10, d=d, nlist=40)
    Q, S = make_queries(d, col, nq=2, qlen=9)
    np.testing.assert_allclose(_core.centroid_scores(Q, np.ascontiguousarray(col["centroids"].T)), S,
                               rtol=1e-5, atol=1e-6)


@native
def test_long_documents_large_nlist_and_k_beyond_candidates():
    # one 8192-token document among short ones, nlist = 65536 (every uint16 code), k > candidates
    rng = np.random.default_rng(5)
    d, nbits, nlist = 64, 4, 65536
    lens = np.array([8192, 3, 7, 1, 50])
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    n = int(offsets[-1])
    codes = rng.integers(0, nlist, n).astype(np.uint16)
    codes[-1] = nlist - 1
    centroids = _unit(rng.standard_normal((nlist, d)))
    packed = rng.integers(0, 256, (n, d * nbits // 8)).astype(np.uint8)
    weights = np.sort(rng.standard_normal((d, 1 << nbits)) * 0.05, axis=1).astype(np.float32)
    got_ivf = _core.build_ivf(codes, offsets, nlist)
    want_ivf = ref.build_ivf(codes, offsets, nlist)
    for g, w in zip(got_ivf, want_ivf):
        np.testing.assert_array_equal(g, w)
    col = dict(codes=codes, packed=packed, doc_offsets=offsets, centroids=centroids, weights=weights, nbits=nbits,
               ivf=want_ivf[0], ivf_offsets=want_ivf[1], d=d)
    Q = _unit(rng.standard_normal((2, 6, d)))
    S = np.ascontiguousarray(Q @ centroids.T)
    params = dict(nprobe=3, threshold=-np.inf, ndocs=10, n_exact=10, k=8)
    got = run_search(_core, Q, S, col, **params)
    assert_topk_equivalent(got, run_search(ref, Q, S, col, **params))
    assert np.all(got[1][:, 5:] == -1) and np.all(np.isneginf(got[0][:, 5:]))  # 5 documents at most
    assert_topk_equivalent(run_exact(_core, Q, col, k=8), run_exact(ref, Q, col, k=8))
    values = ref.decompress(codes, packed, centroids, weights, nbits, True)
    np.testing.assert_allclose(_core.maxsim(Q, values, offsets), ref.maxsim(Q, values, offsets), rtol=1e-5, atol=1e-4)


_COPY_SCRIPT = """
import sys
import numpy as np
from plaidx import _core
a = dict(np.load(sys.argv[1]))
col = (a["codes"], a["packed"], a["doc_offsets"])
cw = (a["centroids"], a["weights"], int(a["nbits"]))
out = {"dispatch": np.array(_core.build_info()["simd_dispatch"])}
own_s = _core.centroid_scores(a["Q"], np.ascontiguousarray(a["centroids"].T))  # this copy's S
for i, (nprobe, thr, nd, ne, k) in enumerate([(2, 0.0, 30, 10, 5), (3, 0.2, 200, 200, 12)]):
    out[f"s{i}"], out[f"d{i}"] = _core.search(a["Q"], a["S"], *col, a["ivf"], a["ivf_offsets"], *cw, a["allowed"],
                                              nprobe, thr, nd, ne, k)
    out[f"os{i}"], out[f"od{i}"] = _core.search(a["Q"], own_s, *col, a["ivf"], a["ivf_offsets"], *cw,
                                                a["allowed"], nprobe, thr, nd, ne, k)
    out[f"fs{i}"], out[f"fd{i}"] = _core.search(a["Q"], None, *col, a["ivf"], a["ivf_offsets"], *cw,
                                                a["allowed"], nprobe, thr, nd, ne, k)
    out[f"qs{i}"], out[f"qd{i}"] = _core.search(a["Q"], None, *col, a["ivf"], a["ivf_offsets"], *cw,
                                                a["allowed"], nprobe, thr, nd, ne, k,
                                                cell_codes=(a["cq"], a["cs"], a["csum"]))
    out[f"gs{i}"], out[f"gd{i}"] = _core.search(a["Q"], a["Sq"], *col, a["ivf"], a["ivf_offsets"], *cw,
                                                a["allowed"], nprobe, thr, nd, ne, k)
    out[f"ks{i}"], out[f"kd{i}"] = _core.search(a["Q"], None, *col, a["ivf"], a["ivf_offsets"], *cw,
                                                a["allowed"], nprobe, thr, nd, ne, k, kept=(a["kv"], a["ks"]))
    out[f"xs{i}"], out[f"xd{i}"] = _core.search(a["Q"], a["S"], *col, a["ivf"], a["ivf_offsets"], *cw,
                                                a["allowed"], nprobe, thr, nd, ne, k, exact_int8=True)
out["es"], out["ed"] = _core.exact_search(a["Q"], *col, *cw, a["allowed"], 7)
out["unit"] = _core.decompress(a["codes"], a["packed"], *cw, True)
out["packed2"] = _core.compress(a["res"], a["cutoffs"], int(a["nbits"]))
out["maxsim"] = _core.maxsim(a["Q"], out["unit"], a["doc_offsets"])
out["cs"] = _core.centroid_scores(a["Qc"], a["Ct"])
np.savez(sys.argv[2], **out)
"""


def run_capped(script: str, level: str, tmp_path: Path, **arrays: np.ndarray):
    """script (reading the arrays from argv[1], writing its results with a "dispatch" entry to argv[2]) run in a
    subprocess with the SIMD dispatch capped at level (PLAIDX_SIMD), so that the copies this CPU would not pick get
    checked too; its results, once the capped copy is seen to have run."""
    np.savez(tmp_path / "in.npz", **arrays)
    root = str(Path(ref.__file__).resolve().parents[2])
    env = dict(os.environ, PLAIDX_SIMD=level, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   env=env, check=True, cwd=tmp_path, timeout=120)
    got = np.load(tmp_path / "out.npz")
    assert ("runs " + level) in str(got["dispatch"]) or "runs baseline" in str(got["dispatch"])
    return got


@native
@pytest.mark.parametrize("nbits", [2, 4])
@pytest.mark.parametrize("level", ["baseline", "avx2"])
def test_every_simd_copy_matches_reference(level, nbits, tmp_path):
    # PLAIDX_SIMD caps the runtime dispatch, so the copies this CPU would not pick get checked too
    # (nbits 2: the generic decoder instead of the AVX-512 one).
    col = make_collection(77, ndocs=100, d=96, nbits=nbits, nlist=24, max_len=30)
    Q, S = make_queries(77, col, nq=3, qlen=11)
    res = (np.random.default_rng(77).standard_normal((300, 96)) * 0.05).astype(np.float32)
    allowed = (np.arange(100) % 4 != 1).astype(np.uint8)
    arrays = {k: v for k, v in col.items() if isinstance(v, np.ndarray)}
    Qc = _unit(np.random.default_rng(78).standard_normal((2, 13, 96)))
    Ct = np.ascontiguousarray(_unit(np.random.default_rng(79).standard_normal((200, 96))).T)
    cq, cs, csum = cellq.quantize_rows(col["centroids"])
    Sq = cellq.quantized_cell_scores(Q, (cq, cs, csum))
    kv, ks = _kept(col)
    got = run_capped(_COPY_SCRIPT, level, tmp_path, Q=Q, S=S, allowed=allowed, res=res, nbits=col["nbits"], Qc=Qc,
                     Ct=Ct, cq=cq, cs=cs, csum=csum, Sq=Sq, kv=kv, ks=ks, **arrays)
    for i, (nprobe, thr, nd, ne, k) in enumerate([(2, 0.0, 30, 10, 5), (3, 0.2, 200, 200, 12)]):
        want = run_search(ref, Q, S, col, allowed, nprobe=nprobe, threshold=thr, ndocs=nd, n_exact=ne, k=k)
        assert_topk_equivalent((got[f"s{i}"], got[f"d{i}"]), want)
        np.testing.assert_array_equal(got[f"fd{i}"], got[f"od{i}"])  # S computed inside: the same values
        np.testing.assert_array_equal(got[f"fs{i}"], got[f"os{i}"])
        # this copy's int8 cell scores (the generic kernel): exactly the numpy values
        np.testing.assert_array_equal(got[f"qd{i}"], got[f"gd{i}"])
        np.testing.assert_array_equal(got[f"qs{i}"], got[f"gs{i}"])
        # this copy's MaxSim over kept int8 vectors (step 5): exactly the reference's
        kept_want = run_search(ref, Q, None, col, allowed, nprobe=nprobe, threshold=thr, ndocs=nd, n_exact=ne, k=k,
                               kept=(kv, ks))
        np.testing.assert_array_equal(got[f"kd{i}"], kept_want[1])
        np.testing.assert_array_equal(got[f"ks{i}"], kept_want[0])
        # this copy's int8 step 5 over the decoded tokens (the generic quantiser and kernel): the reference's
        int8_want = run_search(ref, Q, S, col, allowed, nprobe=nprobe, threshold=thr, ndocs=nd, n_exact=ne, k=k,
                               exact_int8=True)
        assert_topk_equivalent((got[f"xs{i}"], got[f"xd{i}"]), int8_want, tol=1e-5)
    assert_topk_equivalent((got["es"], got["ed"]), run_exact(ref, Q, col, allowed, k=7))
    unit = ref.decompress(col["codes"], col["packed"], col["centroids"], col["weights"], col["nbits"], True)
    np.testing.assert_allclose(got["unit"], unit, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["packed2"], ref.compress(res, col["cutoffs"], col["nbits"]))
    np.testing.assert_allclose(got["maxsim"], ref.maxsim(Q, unit, col["doc_offsets"]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["cs"], ref.centroid_scores(Qc, Ct), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------- properties
@pytest.mark.parametrize("mod", BACKENDS)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("nbits", NBITS)
def test_round_trip_within_half_a_bucket(mod, nbits, d):
    rng = np.random.default_rng(31 * nbits + d)
    nb = 1 << nbits
    cutoffs = np.sort(rng.uniform(-1, 1, (d, nb - 1)), axis=1).astype(np.float32)
    lo, hi = cutoffs[:, 0] - 0.25, cutoffs[:, -1] + 0.25
    edges = np.concatenate([lo[:, None], cutoffs, hi[:, None]], axis=1)  # bucket b: [edges[b], edges[b + 1])
    weights = ((edges[:, :-1] + edges[:, 1:]) / 2).astype(np.float32)
    x = rng.uniform(lo, hi, (400, d)).astype(np.float32)
    x[:5] = cutoffs[:, 0]  # on a cutoff
    packed = mod.compress(x, cutoffs, nbits)
    assert packed.shape == (400, d * nbits // 8) and packed.dtype == np.uint8
    code = unpack_codes(packed, d, nbits)
    np.testing.assert_array_equal(code, (cutoffs[None, :, :] <= x[:, :, None]).sum(-1))
    zero = np.zeros((1, d), np.float32)
    y = mod.decompress(np.zeros(400, np.uint16), packed, zero, weights, nbits, False)
    half = (np.take_along_axis(edges.T, code + 1, axis=0) - np.take_along_axis(edges.T, code, axis=0)) / 2
    assert np.all(np.abs(y - x) <= half * (1 + 1e-6) + 1e-7)


@pytest.mark.parametrize("mod", BACKENDS)
@pytest.mark.parametrize("nbits", NBITS)
def test_decompress_is_centroid_plus_weights_and_normalizes(mod, nbits):
    col = make_collection(nbits, ndocs=10, d=64, nbits=nbits)
    args = (col["codes"], col["packed"], col["centroids"], col["weights"], nbits)
    raw = mod.decompress(*args, False)
    code = unpack_codes(col["packed"], 64, nbits)
    want = col["centroids"][col["codes"]] + np.take_along_axis(col["weights"].T, code, axis=0)
    np.testing.assert_array_equal(raw, want)
    unit = mod.decompress(*args, True)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mod", BACKENDS)
def test_maxsim_is_invariant_to_token_order(mod):
    rng = np.random.default_rng(3)
    lens = rng.integers(1, 40, 25)
    offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    values = rng.standard_normal((int(offsets[-1]), 96)).astype(np.float32)
    Q = rng.standard_normal((4, 13, 96)).astype(np.float32)
    perm = np.concatenate([lo + rng.permutation(hi - lo) for lo, hi in zip(offsets[:-1], offsets[1:])])
    np.testing.assert_array_equal(mod.maxsim(Q, values, offsets), mod.maxsim(Q, values[perm], offsets))
    # and against the plain definition
    want = np.array([[(q @ values[lo:hi].T).max(axis=1).sum() for lo, hi in zip(offsets[:-1], offsets[1:])]
                     for q in Q])
    np.testing.assert_allclose(mod.maxsim(Q, values, offsets), want, rtol=1e-5, atol=1e-4)
    # token order of compressed documents does not matter either
    col = make_collection(4, ndocs=30, d=64)
    Qc, _ = make_queries(4, col)
    off = col["doc_offsets"]
    perm = np.concatenate([lo + rng.permutation(hi - lo) for lo, hi in zip(off[:-1], off[1:])])
    shuffled = dict(col, codes=col["codes"][perm], packed=np.ascontiguousarray(col["packed"][perm]))
    for a, b in zip(run_exact(mod, Qc, col, k=30), run_exact(mod, Qc, shuffled, k=30)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mod", BACKENDS)
@pytest.mark.parametrize("nbits", [1, 8])
def test_full_probe_search_equals_exact_search(mod, nbits):
    col = make_collection(11 + nbits, ndocs=70, d=96, nbits=nbits, nlist=20, quantize=nbits == 1)
    Q, S = make_queries(11, col, nq=4, qlen=7, quantize=nbits == 1)
    for allowed in (NO_MASK, (np.arange(70) % 3 != 0).astype(np.uint8)):
        for k in (1, 10, 100):
            got = run_search(mod, Q, S, col, allowed, nprobe=20, threshold=-np.inf, ndocs=70, n_exact=70, k=k)
            want = run_exact(mod, Q, col, allowed, k=k)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("mod", BACKENDS)
def test_given_candidates_replace_the_probes(mod):
    """candidates= makes steps 1-2 the allowed ones of the given documents, whatever nprobe: every document given
    is the full probe's candidate list, a subset only ever returns its allowed members, and with every candidate
    scored exactly the result is the exhaustive search over them."""
    col = make_collection(31, ndocs=90, d=64, nlist=16)
    Q, S = make_queries(31, col, nq=3, qlen=6)
    every = np.arange(90, dtype=np.int64)
    full = run_search(mod, Q, S, col, nprobe=16, threshold=0.1, ndocs=30, n_exact=10, k=8)
    for nprobe in (1, 16):
        got = run_search(mod, Q, S, col, nprobe=nprobe, threshold=0.1, ndocs=30, n_exact=10, k=8, candidates=every)
        np.testing.assert_array_equal(got[0], full[0])
        np.testing.assert_array_equal(got[1], full[1])
    rng = np.random.default_rng(31)
    allowed = (rng.random(90) < 0.7).astype(np.uint8)
    subset = np.flatnonzero(rng.random(90) < 0.4).astype(np.int64)
    both = np.intersect1d(subset, np.flatnonzero(allowed))
    assert 5 < len(both) < len(subset)
    scores, docs = run_search(mod, Q, S, col, allowed, nprobe=1, threshold=0.0, ndocs=90, n_exact=90, k=90,
                              candidates=subset)
    for row in docs:
        np.testing.assert_array_equal(np.sort(row[row >= 0]), both)
    mask = np.zeros(90, np.uint8)
    mask[both] = 1
    want = run_exact(mod, Q, col, mask, k=90)
    np.testing.assert_array_equal(scores, want[0])
    np.testing.assert_array_equal(docs, want[1])
    empty = run_search(mod, Q, S, col, candidates=np.zeros(0, np.int64))
    assert np.all(empty[1] == -1)
    for bad in (np.array([3, 2], np.int64), np.array([4, 4], np.int64), np.array([-1, 2], np.int64),
                np.array([89, 90], np.int64)):
        with pytest.raises(ValueError, match="candidates must be distinct documents in \\[0, ndocs\\), ascending"):
            run_search(mod, Q, S, col, candidates=bad)


@pytest.mark.parametrize("mod", BACKENDS)
def test_hub_lists_add_no_candidates(mod):
    """max_list=m: a probed cell whose list holds more than m documents (here a [CLS]-like cell every document's
    first token falls in) adds none of them; the candidates are the other probed lists' documents, whose scores
    still count the hub's cell; with every candidate scored exactly the result is the exhaustive search over
    them. 0 (the default) reads every list; a negative m is refused."""
    col = make_collection(41, ndocs=90, d=64, nlist=16)
    codes = col["codes"].copy()
    codes[col["doc_offsets"][:-1]] = 5  # every document's first token in cell 5
    ivf, ivf_offsets = ref.build_ivf(codes, col["doc_offsets"], 16)
    col = dict(col, codes=codes, ivf=ivf, ivf_offsets=ivf_offsets)
    sizes = np.diff(ivf_offsets)
    assert sizes[5] == 90 and sizes.max(initial=0, where=np.arange(16) != 5) < 60
    Q, S = make_queries(41, col, nq=3, qlen=6)
    m = int(sizes.max(initial=0, where=np.arange(16) != 5))
    kept = np.unique(np.concatenate([ivf[ivf_offsets[c]:ivf_offsets[c + 1]] for c in range(16) if c != 5]))
    assert 0 < kept.size < 90
    for nprobe in (16, 3):
        probed = run_search(mod, Q, S, col, nprobe=nprobe, threshold=0.0, ndocs=90, n_exact=90, k=90, max_list=m)
        if nprobe == 16:
            mask = np.zeros(90, np.uint8)
            mask[kept] = 1
            want = run_exact(mod, Q, col, mask, k=90)
            np.testing.assert_array_equal(probed[0], want[0])
            np.testing.assert_array_equal(probed[1], want[1])
        for row in probed[1]:
            assert set(row[row >= 0].tolist()) <= set(kept.tolist())
    every = run_search(mod, Q, S, col, nprobe=16, threshold=0.0, ndocs=90, n_exact=90, k=90)
    assert all((row >= 0).sum() == 90 for row in every[1])
    np.testing.assert_array_equal(run_search(mod, Q, S, col, nprobe=16, ndocs=90, n_exact=90, k=90, max_list=90)[1],
                                  every[1])
    with pytest.raises(ValueError, match="max_list must be >= 0"):
        run_search(mod, Q, S, col, max_list=-1)


@native
def test_workspaces_of_several_query_lengths_serve_later_searches_unchanged():
    """Each thread keeps the workspaces of a few query shapes (lengths) for later searches: searches alternating
    between six lengths, more than are kept, with and without a filter and a hub limit, give the same results on
    every pass as the first."""
    col = make_collection(53, ndocs=120, d=64, nlist=24, max_len=30)
    rng = np.random.default_rng(53)
    allowed = (rng.random(120) < 0.5).astype(np.uint8)
    runs = []
    for _ in range(3):
        out = []
        for qlen in (3, 9, 17, 30, 33, 41):
            Q, S = make_queries(qlen, col, nq=1, qlen=qlen)
            for mask, max_list in ((NO_MASK, 0), (allowed, 40)):
                out.append(run_search(_core, Q, None, col, mask, nprobe=3, threshold=0.1, ndocs=40, n_exact=12, k=8,
                                      max_list=max_list, cell_codes=_core.quantize_rows(col["centroids"])))
        runs.append(out)
    for later in runs[1:]:
        for (s0, d0), (s1, d1) in zip(runs[0], later):
            np.testing.assert_array_equal(d0, d1)
            np.testing.assert_array_equal(s0, s1)


@pytest.mark.parametrize("mod", BACKENDS)
def test_pruning_only_shapes_the_first_cut(mod):
    # With every candidate kept after step 3, the threshold cannot matter: step 4 rescores without it.
    col = make_collection(17, ndocs=80, d=64, nlist=16)
    Q, S = make_queries(17, col, nq=3, qlen=6)
    base = run_search(mod, Q, S, col, nprobe=3, threshold=-np.inf, ndocs=80, n_exact=4, k=4)
    for threshold in (0.2, 0.4, np.inf):
        got = run_search(mod, Q, S, col, nprobe=3, threshold=threshold, ndocs=80, n_exact=4, k=4)
        np.testing.assert_array_equal(got[0], base[0])
        np.testing.assert_array_equal(got[1], base[1])


@pytest.mark.parametrize("mod", BACKENDS)
def test_results_are_ordered_and_padded(mod):
    col = make_collection(21, ndocs=40, d=64, quantize=True)
    Q, S = make_queries(21, col, nq=2, quantize=True)
    scores, docs = run_search(mod, Q, S, col, nprobe=16, threshold=-np.inf, ndocs=40, n_exact=40, k=50)
    assert scores.shape == docs.shape == (2, 50)
    assert np.all(docs[:, 40:] == -1) and np.all(np.isneginf(scores[:, 40:]))
    for s, dd in zip(scores[:, :40], docs[:, :40]):
        assert sorted(dd) == list(range(40))
        for i in range(39):  # score descending, then document ascending
            assert s[i] > s[i + 1] or (s[i] == s[i + 1] and dd[i] < dd[i + 1])


@pytest.mark.parametrize("mod", BACKENDS)
def test_allowed_mask_is_respected(mod):
    col = make_collection(8, ndocs=90, d=64, nlist=12)
    Q, S = make_queries(8, col, nq=3)
    allowed = (np.random.default_rng(8).random(90) < 0.3).astype(np.uint8)
    for res in (run_search(mod, Q, S, col, allowed, nprobe=12, threshold=-np.inf, ndocs=90, n_exact=90, k=60),
                run_search(mod, Q, S, col, allowed, nprobe=2, threshold=0.1, ndocs=10, n_exact=5, k=4),
                run_exact(mod, Q, col, allowed, k=60)):
        docs = res[1]
        assert np.all(allowed[docs[docs >= 0]] == 1)
    full = run_exact(mod, Q, col, allowed, k=90)[1]
    assert np.all((full >= 0).sum(axis=1) == allowed.sum())
    none = np.zeros(90, np.uint8)
    for res in (run_search(mod, Q, S, col, none), run_exact(mod, Q, col, none)):
        assert np.all(res[1] == -1) and np.all(np.isneginf(res[0]))


@pytest.mark.parametrize("mod", BACKENDS)
def test_thread_count_does_not_change_results(mod):
    # Large enough for the native stages to really run on 2 threads (they stay serial for tiny work):
    # 16384 cells x 64 query tokens, ~100k candidate tokens, ~12k tokens re-ranked exactly; k large so
    # that any change in the candidates shows.
    big = mod is not ref
    col = make_collection(13, ndocs=4000 if big else 200, d=64, nbits=2, nlist=16384 if big else 32,
                          max_len=60 if big else 30)
    Q, S = make_queries(13, col, nq=3, qlen=64 if big else 12)
    values = ref.decompress(col["codes"], col["packed"], col["centroids"], col["weights"], 2, True)
    params = dict(nprobe=16, threshold=0.28, ndocs=1000, n_exact=400, k=400) if big else \
        dict(nprobe=3, threshold=0.05, ndocs=60, n_exact=20, k=10)
    given = np.arange(0, col["ndocs"], 3, dtype=np.int64)  # steps 1-2 given: a third of the documents
    for nq in (1, 3):  # nq = 1 parallelizes inside the query, nq = 3 across queries
        runs = [(*run_search(mod, Q[:nq], S[:nq], col, **params, num_threads=t),
                 *run_search(mod, Q[:nq], S[:nq], col, **params, num_threads=t, candidates=given),
                 *run_exact(mod, Q[:nq], col, k=10, num_threads=t),
                 mod.maxsim(Q[:nq], values, col["doc_offsets"], num_threads=t)) for t in (1, 2, 0)]
        for other in runs[1:]:
            for x, y in zip(runs[0], other):
                np.testing.assert_array_equal(x, y)
    # a batch gives each query the same answer as searching it alone
    batch = run_search(mod, Q, S, col, **params, num_threads=2)
    for q in range(3):
        alone = run_search(mod, Q[q:q + 1], S[q:q + 1], col, **params, num_threads=2)
        np.testing.assert_array_equal(batch[0][q], alone[0][0])
        np.testing.assert_array_equal(batch[1][q], alone[1][0])


@pytest.mark.parametrize("mod", BACKENDS)
def test_centroid_scores_thread_count_does_not_change_results(mod):
    # 5 * 32 * 3001 * 128 = 61M multiply-adds: above the native kernel's serial cutoff (~50M), so 2
    # threads really split the (cell block, query) tiles; 3001 cells end in a partial block.
    rng = np.random.default_rng(41)
    Q = _unit(rng.standard_normal((5, 32, 128)))
    Ct = np.ascontiguousarray(_unit(rng.standard_normal((3001, 128))).T)
    runs = [mod.centroid_scores(Q, Ct, num_threads=t) for t in (1, 2, 0)]
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0], other)
    if mod is not ref:  # one fixed sequence of operations per score: a query alone gets the same bits
        for q in range(5):
            np.testing.assert_array_equal(mod.centroid_scores(Q[q:q + 1], Ct, num_threads=1)[0], runs[0][q])


@native
def test_probe_selection_paths_match_reference():
    # nprobe <= 64 keeps a sorted buffer, larger nprobe uses a partial sort: both must pick the same
    # cells as the reference, ties (quantized scores) included.
    col = make_collection(23, ndocs=150, d=64, nlist=300, max_len=10, quantize=True)
    Q, S = make_queries(23, col, nq=2, qlen=5, quantize=True)
    for nprobe in (1, 2, 64, 65, 150, 299, 300, 1000):
        for params in (dict(nprobe=nprobe, threshold=-np.inf, ndocs=150, n_exact=150, k=150),
                       dict(nprobe=nprobe, threshold=0.5, ndocs=7, n_exact=5, k=3)):
            assert_topk_equivalent(run_search(_core, Q, S, col, **params), run_search(ref, Q, S, col, **params))


@native
@pytest.mark.parametrize("qlen", [1, 5, 8, 13, 32, 40])
def test_fused_scores_equal_given_scores(qlen):
    """search(Q, None) scores the centroids inside, straight in the transposed layout, and probes with
    per-block bounds: it must return exactly what search(Q, S) returns with S from centroid_scores, over
    many cell blocks (1000 cells), empty cells, tied scores, every probe path and thresholds on both
    sides of the zero padding columns; a query token of NaNs takes the probe's every-cell fallback."""
    col = make_collection(31 + qlen, ndocs=400, d=64, nbits=2, nlist=1000, max_len=20, quantize=True)
    col["codes"] = (col["codes"] // 3 * 3).astype(np.uint16)  # two cells in three empty
    col["ivf"], col["ivf_offsets"] = ref.build_ivf(col["codes"], col["doc_offsets"], 1000)
    Q, _ = make_queries(qlen, col, nq=3, qlen=qlen, quantize=True)
    Q[2, qlen // 2] = np.nan
    S = _core.centroid_scores(Q, np.ascontiguousarray(col["centroids"].T))
    for nprobe in (1, 3, 64, 65, 999):
        for threshold in (-np.inf, -0.1, 0.0, 0.3):
            params = dict(nprobe=nprobe, threshold=threshold, ndocs=60, n_exact=15, k=10)
            given_s, given_d = run_search(_core, Q, S, col, **params)
            for threads in (1, 2):
                fused_s, fused_d = run_search(_core, Q, None, col, num_threads=threads, **params)
                np.testing.assert_array_equal(fused_d, given_d)
                np.testing.assert_array_equal(fused_s, given_s)
            if qlen < 32 and nprobe < 999:
                assert_topk_equivalent(run_search(_core, Q[:2], None, col, **params),
                                       run_search(ref, Q[:2], None, col, **params))


@pytest.mark.parametrize("mod", BACKENDS)
def test_quantize_rows_gives_the_same_bytes_everywhere(mod):
    """Row-wise int8: the largest |value| of a row maps to +-127, a zero row keeps scale 1, and the native
    and numpy statements agree byte for byte (the cell scores of every backend rest on it)."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((300, 96)) * rng.uniform(0.01, 3, (300, 1))).astype(np.float32)
    x[7] = 0.0
    x[8, :] = 0.5
    x[9, :] = np.arange(96) - 47.5  # scale 47.5 / 127: no exact halves, but values across the whole range
    x[10, :] = np.resize([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5], 96)  # scale 1: rint's ties
    q, s, sums = mod.quantize_rows(x)
    assert q.dtype == np.int8 and s.dtype == np.float32 and sums.dtype == np.int32
    want = cellq.quantize_rows(x)
    for got, ref_value in zip((q, s, sums), want):
        np.testing.assert_array_equal(got, ref_value)
    assert s[7] == np.float32(1e-30) / np.float32(127) and not q[7].any()
    np.testing.assert_array_equal(np.abs(q).max(axis=1)[np.arange(300) != 7], 127)
    np.testing.assert_array_equal(q[10, :9], [127, 0, 2, 2, 0, -2, -2, 126, -126])  # ties to even
    np.testing.assert_array_equal(sums, q.sum(axis=1))
    assert np.abs(q.astype(np.float32) * s[:, None] - x).max() <= s.max() / 2 * 1.0001
    x[3, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        mod.quantize_rows(x)


@native
@pytest.mark.parametrize("qlen,d", [(1, 64), (5, 64), (8, 136), (13, 64), (32, 64), (32, 96), (40, 136)])
def test_quantized_cell_scores_equal_given_scores(qlen, d):
    """search(Q, None, cell_codes=...) scores the cells with int8 dot products inside (the VNNI kernel on
    CPUs that have it, which also derives the kept cells and block maxima itself): its results must be
    exactly those of search(Q, S) with S = cellq.quantized_cell_scores, over many cell blocks (1000 cells: a
    tail after the 8-cell tiles), d a multiple of 64 or not, empty cells, every probe path, thresholds around
    the scores, 1 and 2 threads; the reference agrees."""
    col = make_collection(51 + qlen, ndocs=400, d=d, nbits=2, nlist=1000, max_len=20)
    col["codes"] = (col["codes"] // 3 * 3).astype(np.uint16)  # two cells in three empty
    col["ivf"], col["ivf_offsets"] = ref.build_ivf(col["codes"], col["doc_offsets"], 1000)
    Q, _ = make_queries(qlen + 7, col, nq=3, qlen=qlen)
    cells = _core.quantize_rows(col["centroids"])
    S = cellq.quantized_cell_scores(Q, cells)
    assert np.abs(S - Q @ col["centroids"].T).max() < 0.02  # close to the float scores
    for nprobe in (1, 3, 64, 65, 999):
        for threshold in (-np.inf, -0.1, 0.0, float(np.median(S.max(axis=1))), 0.3):
            params = dict(nprobe=nprobe, threshold=threshold, ndocs=60, n_exact=15, k=10)
            given_s, given_d = run_search(_core, Q, S, col, **params)
            for threads in (1, 2):
                got_s, got_d = run_search(_core, Q, None, col, num_threads=threads, cell_codes=cells, **params)
                np.testing.assert_array_equal(got_d, given_d)
                np.testing.assert_array_equal(got_s, given_s)
            if nprobe in (3, 65):
                assert_topk_equivalent(run_search(ref, Q, None, col, cell_codes=cells, **params), (given_s, given_d))


@native
def test_quantized_cell_scores_of_a_large_table_equal_given_scores():
    """From 16 MiB of cell scores per query (131,072 cells x 32 query tokens) the VNNI kernel writes them with
    non-temporal stores, and from 1/64 of the collection the candidates are listed by a scan of their marks
    instead of a sort: the results must still be exactly those of search(Q, S), with few candidates (the sort)
    and many (the scan), with and without deleted documents, 1 and 2 threads."""
    nlist = 1 << 17
    col = make_collection(77, ndocs=3000, d=64, nbits=2, nlist=nlist, max_len=20)
    Q, _ = make_queries(78, col, nq=2, qlen=32)
    cells = _core.quantize_rows(col["centroids"])
    S = cellq.quantized_cell_scores(Q, cells)
    some = (np.arange(col["ndocs"]) % 3 != 0).astype(np.uint8)  # a third of the documents deleted
    for nprobe, allowed in itertools.product((1, 4000), (NO_MASK, some)):
        params = dict(nprobe=nprobe, threshold=0.1, ndocs=200, n_exact=10, k=10)  # the top k by cell scores
        given_s, given_d = run_search(_core, Q, S, col, allowed, **params)
        assert (given_d >= 0).all() and (allowed.size == 0 or allowed[given_d].all())
        for threads in (1, 2):
            got_s, got_d = run_search(_core, Q, None, col, allowed, num_threads=threads, cell_codes=cells, **params)
            np.testing.assert_array_equal(got_d, given_d)
            np.testing.assert_array_equal(got_s, given_s)
        assert_topk_equivalent(run_search(ref, Q, S, col, allowed, **params), (given_s, given_d))


def _kept(col: dict, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Kept int8 vectors (one per token, near the decoded ones) and their scales."""
    n, d = col["codes"].shape[0], col["centroids"].shape[1]
    x = col["centroids"][col["codes"]] + 0.3 * np.random.default_rng(seed).standard_normal((n, d))
    return cellq.quantize_int8(_unit(x))


def _kept_score(q: np.ndarray, kv: np.ndarray, ks: np.ndarray) -> np.float32:
    """The quantised MaxSim of one query over one document's kept rows, stated here from the definition."""
    qq, qs = cellq.quantize_int8(q)
    dots = (qq.astype(np.int64) @ kv.astype(np.int64).T).astype(np.float32)  # exact integers
    best = ((dots * ks[None, :]) * qs[:, None]).max(axis=1)
    total = np.float32(0)
    for v in best:
        total = np.float32(total + v)
    return total


@native
@pytest.mark.parametrize("qlen", [1, 5, 13, 32, 40])
@pytest.mark.parametrize("d", [64, 136])
def test_kept_vectors_score_the_last_stage_the_same_everywhere(qlen, d):
    """search(..., kept=(int8 vectors, scales)) scores the n_exact candidates by MaxSim over their kept int8
    vectors against the quantised query (the VNNI kernel where the CPU has it), not by decompressing them:
    the same scores and documents bit for bit with 1 or 2 threads, with float or int8 cell scores, as the
    reference, and each score is the definition's value for its document."""
    col = make_collection(90 + qlen, ndocs=300, d=d, nbits=2, nlist=40, max_len=37)
    Q, S = make_queries(qlen, col, nq=3, qlen=qlen)
    kv, ks = _kept(col)
    cells = _core.quantize_rows(col["centroids"])
    for params in (dict(nprobe=3, threshold=0.0, ndocs=80, n_exact=30, k=10),
                   dict(nprobe=40, threshold=-1.0, ndocs=300, n_exact=300, k=12)):
        want = run_search(ref, Q, S, col, kept=(kv, ks), **params)
        want_q = run_search(ref, Q, None, col, kept=(kv, ks), cell_codes=cells, **params)
        for threads in (1, 2):
            for S_, cc, w in ((S, None, want), (None, cells, want_q)):
                got = run_search(_core, Q, S_, col, num_threads=threads, kept=(kv, ks), cell_codes=cc, **params)
                np.testing.assert_array_equal(got[1], w[1])
                np.testing.assert_array_equal(got[0], w[0])
        offs = col["doc_offsets"]
        for qi in range(Q.shape[0]):
            for sc, doc in zip(*[x[qi] for x in want]):
                lo, hi = offs[doc], offs[doc + 1]
                assert sc == _kept_score(Q[qi], kv[lo:hi], ks[lo:hi])
        if params["n_exact"] == 300:  # every document scored: the top k of the definition's scores
            every = np.array([_kept_score(Q[0], kv[offs[i]:offs[i + 1]], ks[offs[i]:offs[i + 1]]) for i in range(300)])
            np.testing.assert_array_equal(want[1][0], np.lexsort((np.arange(300), -every))[:12])


def _exact_int8_score(q: np.ndarray, col: dict, doc: int) -> np.float32:
    """Step 5 with exact_int8 for one document, stated from the definition: its decoded tokens quantised as
    unit vectors (the bytes of quantize_int8 of the unit vector up to rounding ties, so checked against
    cellq.quantize_unit_rows below), scored as kept int8 rows are."""
    lo, hi = col["doc_offsets"][doc], col["doc_offsets"][doc + 1]
    v = ref.decompress(col["codes"][lo:hi], col["packed"][lo:hi], col["centroids"], col["weights"], col["nbits"],
                       False)
    rows, scales = cellq.quantize_unit_rows(v)
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    # the same rows as quantising the unit vectors (a byte off by one where x / s sits at a rounding tie)
    assert np.abs(rows.astype(np.int16) - cellq.quantize_int8(unit)[0]).max() <= 1
    np.testing.assert_allclose(rows * scales[:, None], unit, atol=1e-2 * np.abs(unit).max())
    return _kept_score(q, rows, scales)


@native
@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("qlen", [1, 13, 32, 40])
@pytest.mark.parametrize("d", [64, 136])
def test_exact_int8_scores_the_decoded_tokens_the_same_everywhere(d, qlen, nbits):
    """search(..., exact_int8=True) scores the n_exact candidates' decoded tokens in int8 (quantised as unit
    vectors, cellq.quantize_unit_rows) against the quantised query: the reference's documents and scores
    (scales may differ in the last bit of the norm), bit for bit with 1 or 2 threads, each score the
    definition's for its document, and within a few hundredths of the float step 5."""
    col = make_collection(40 + qlen + nbits, ndocs=300, d=d, nbits=nbits, nlist=40, max_len=37)
    Q, S = make_queries(qlen, col, nq=3, qlen=qlen)
    cells = _core.quantize_rows(col["centroids"])
    for params in (dict(nprobe=3, threshold=0.0, ndocs=80, n_exact=30, k=10),
                   dict(nprobe=40, threshold=-1.0, ndocs=300, n_exact=300, k=12)):
        want = run_search(ref, Q, S, col, exact_int8=True, **params)
        one = run_search(_core, Q, S, col, num_threads=1, exact_int8=True, **params)
        assert_topk_equivalent(one, want, tol=1e-5)
        for S_, cc in ((S, None), (None, cells)):
            got = run_search(_core, Q, S_, col, num_threads=2, exact_int8=True, cell_codes=cc, **params)
            if cc is None:
                np.testing.assert_array_equal(got[0], one[0])
                np.testing.assert_array_equal(got[1], one[1])
            for qi in range(Q.shape[0]):
                for sc, doc in zip(*[x[qi] for x in got]):
                    np.testing.assert_allclose(sc, _exact_int8_score(Q[qi], col, doc), rtol=1e-6, atol=1e-6)
        if params["n_exact"] == 300:  # every document scored: the float scores of step 5, nearly
            fl = run_search(_core, Q, S, col, **params)
            np.testing.assert_allclose(one[0], fl[0], atol=0.02 * qlen)


@pytest.mark.parametrize("mod", BACKENDS)
def test_exact_int8_bad_input_is_a_clear_error(mod):
    col = make_collection(3, ndocs=30, d=64, nbits=2, nlist=8)
    Q, S = make_queries(3, col, nq=1, qlen=5)
    kv, ks = _kept(col)
    with pytest.raises(ValueError, match="pass one or the other"):
        run_search(mod, Q, S, col, exact_int8=True, kept=(kv, ks))
    Q[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite query values"):
        run_search(mod, Q, S, col, exact_int8=True)
    big = make_collection(4, ndocs=5, d=1032, nbits=2, nlist=4, max_len=3)
    Qb, Sb = make_queries(4, big, nq=1, qlen=2)
    with pytest.raises(ValueError, match="1024"):
        run_search(mod, Qb, Sb, big, exact_int8=True)


@native
def test_float16_kept_vectors_score_the_last_stage_as_maxsim_does():
    """kept=(float16 vectors, None): step 5 is maxsim over the candidates' vectors converted exactly, so its
    scores equal _core.maxsim's over those rows bit for bit (1 or 2 threads); the reference agrees."""
    col = make_collection(31, ndocs=200, d=96, nbits=2, nlist=30, max_len=90)  # documents over 64 tokens too
    Q, S = make_queries(31, col, nq=3, qlen=13)
    kv, ks = _kept(col)
    half = (kv.astype(np.float32) * ks[:, None]).astype(np.float16)
    half[5, :3] = [np.float16(6e-8), np.float16(-0.0), np.float16(1e-5)]  # subnormals and a signed zero
    params = dict(nprobe=4, threshold=0.0, ndocs=100, n_exact=40, k=10)
    want = run_search(ref, Q, S, col, kept=(half, None), **params)
    offs = col["doc_offsets"]
    for threads in (1, 2):
        got = run_search(_core, Q, S, col, num_threads=threads, kept=(half, None), **params)
        assert_topk_equivalent(got, want)
        for qi in range(Q.shape[0]):
            for sc, doc in zip(*[x[qi] for x in got]):
                rows = half[offs[doc]:offs[doc + 1]].astype(np.float32)
                assert sc == _core.maxsim(Q[qi:qi + 1], rows, np.array([0, len(rows)]))[0, 0]
    with pytest.raises(ValueError, match="needs float16 vectors"):
        run_search(_core, Q, S, col, kept=(kv, None), **params)


@pytest.mark.parametrize("mod", BACKENDS)
def test_kept_scores_are_the_searchs_last_stage_for_any_documents(mod):
    """kept_scores scores listed documents as search's step 5 does: int8 bit for bit with the definition
    (and between the backends), float16 as maxsim over the converted rows; bad documents are clear errors."""
    col = make_collection(12, ndocs=80, d=64, nbits=2, nlist=16, max_len=40)
    Q, _ = make_queries(12, col, nq=3, qlen=9)
    kv, ks = _kept(col)
    offs = col["doc_offsets"]
    docs = np.array([5, 0, 79, 5, 33], np.int64)
    got = mod.kept_scores(Q, (kv, ks), offs, docs, num_threads=2)
    assert got.shape == (3, 5) and got.dtype == np.float32
    for qi in range(3):
        for j, doc in enumerate(docs):
            assert got[qi, j] == _kept_score(Q[qi], kv[offs[doc]:offs[doc + 1]], ks[offs[doc]:offs[doc + 1]])
    np.testing.assert_array_equal(got, ref.kept_scores(Q, (kv, ks), offs, docs))
    half = (kv.astype(np.float32) * ks[:, None]).astype(np.float16)
    got16 = mod.kept_scores(Q, (half, None), offs, docs)
    want16 = ref.maxsim(Q, half.astype(np.float32), offs)[:, docs]
    np.testing.assert_allclose(got16, want16, rtol=1e-5, atol=1e-5)
    assert mod.kept_scores(Q, (kv, ks), offs, np.zeros(0, np.int64)).shape == (3, 0)
    with pytest.raises(ValueError, match="outside"):
        mod.kept_scores(Q, (kv, ks), offs, np.array([80], np.int64))
    with pytest.raises(ValueError, match="doc_offsets"):
        mod.kept_scores(Q, (kv, ks), offs[:-1], docs[:1])


@native
@pytest.mark.parametrize("qlen", [3, 16, 40])
def test_kept_scores_of_short_documents_sharing_tile_groups(qlen):
    """Where the CPU has AMX, the tier takes its candidates' kept rows 16 at a time across documents, so that
    short documents share tile products; a document of 16 rows or more is loaded where it lies for each whole
    group. Documents of 0 to 40 rows in any order (repeats too, groups ending mid-document, a last group
    padded) score the definition's value bit for bit, with 1 or 2 threads, as the reference scores them."""
    rng = np.random.default_rng(qlen)
    d = 128
    lengths = np.array([1, 3, 0, 15, 16, 17, 2, 33, 5, 40, 1, 9, 12, 7, 31, 32, 4, 1, 1, 8] * 4)
    offs = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    kv, ks = cellq.quantize_int8(_unit(rng.standard_normal((int(offs[-1]), d))))
    Q = _unit(rng.standard_normal((2, qlen, d))).astype(np.float32)
    docs = np.concatenate([rng.permutation(len(lengths)), [7, 7, 2, 0, 9]]).astype(np.int64)
    want = np.array([[_kept_score(Q[qi], kv[offs[doc]:offs[doc + 1]], ks[offs[doc]:offs[doc + 1]])
                      if lengths[doc] else np.float32(0) for doc in docs] for qi in range(2)], np.float32)
    for threads in (1, 2):
        np.testing.assert_array_equal(_core.kept_scores(Q, (kv, ks), offs, docs, num_threads=threads), want)
    np.testing.assert_array_equal(ref.kept_scores(Q, (kv, ks), offs, docs), want)
    for m in (1, 5, 23):  # fewer rows than a group, and a group cut off in the middle of a document
        np.testing.assert_array_equal(_core.kept_scores(Q, (kv, ks), offs, docs[:m]), want[:, :m])


@pytest.mark.parametrize("mod", BACKENDS)
def test_kept_bad_input_is_a_clear_error(mod):
    col = make_collection(3, ndocs=30, d=64, nlist=16)
    Q, S = make_queries(3, col, nq=2, qlen=4)
    kv, ks = _kept(col)
    with pytest.raises(ValueError, match="pair"):
        run_search(mod, Q, S, col, kept=(kv, ks, ks))
    with pytest.raises(ValueError, match="one row .and one scale, for int8. per token"):
        run_search(mod, Q, S, col, kept=(kv[:-1], ks[:-1]))
    with pytest.raises((ValueError, TypeError), match="int8"):
        run_search(mod, Q, S, col, kept=(kv.astype(np.float32), ks))
    Q[1, 2, 5] = np.nan
    with pytest.raises(ValueError, match="finite"):
        run_search(mod, Q, S, col, kept=(kv, ks))
    wide = make_collection(4, ndocs=5, d=1032, nlist=4, max_len=3)  # int8 sums no longer exact in float32
    Qw, Sw = make_queries(4, wide, nq=1, qlen=2)
    with pytest.raises(ValueError, match="d <= 1024"):
        run_search(mod, Qw, Sw, wide, kept=cellq.quantize_int8(np.ones((wide["codes"].shape[0], 1032), np.float32)))


@pytest.mark.parametrize("mod", BACKENDS)
def test_cell_codes_bad_input_is_a_clear_error(mod):
    col = make_collection(3, ndocs=30, d=64, nlist=16)
    Q, _ = make_queries(3, col, nq=2, qlen=4)
    cells = mod.quantize_rows(col["centroids"])
    with pytest.raises(ValueError, match="triple"):
        run_search(mod, Q, None, col, cell_codes=cells[:2])
    with pytest.raises(ValueError, match="quantize_rows"):
        run_search(mod, Q, None, col, cell_codes=(cells[0][:8], cells[1][:8], cells[2][:8]))
    Q[1, 2, 5] = np.inf
    with pytest.raises(ValueError, match="finite"):
        run_search(mod, Q, None, col, cell_codes=cells)
    wide = make_collection(4, ndocs=5, d=1032, nlist=4, max_len=3)  # int8 sums no longer exact in float32
    Qw, _ = make_queries(4, wide, nq=1, qlen=2)
    with pytest.raises(ValueError, match="d <= 1024"):
        run_search(mod, Qw, None, wide, cell_codes=mod.quantize_rows(wide["centroids"]))


@pytest.mark.parametrize("mod", BACKENDS)
def test_doc_cells_lists_each_documents_distinct_cells(mod):
    col = make_collection(41, ndocs=90, d=64, nlist=40, max_len=30)
    cells, offsets = mod.doc_cells(col["ivf"], col["ivf_offsets"], col["ndocs"])
    assert cells.dtype == np.uint16 and offsets.dtype == np.int64 and offsets.shape == (col["ndocs"] + 1,)
    o = col["doc_offsets"]
    for i in range(col["ndocs"]):
        np.testing.assert_array_equal(cells[offsets[i]:offsets[i + 1]], np.unique(col["codes"][o[i]:o[i + 1]]))
    with pytest.raises(ValueError, match="outside"):
        mod.doc_cells(col["ivf"], col["ivf_offsets"], 5)  # documents beyond ndocs


@native
def test_doc_cells_give_the_same_search():
    """The centroid interaction reads each candidate's distinct cells instead of every token's code: the
    results must not change (both the one-pass and the two-pass paths), and a doc_cells pair that does
    not belong to the collection is rejected."""
    col = make_collection(43, ndocs=300, d=64, nbits=2, nlist=64, max_len=40, quantize=True)
    Q, S = make_queries(43, col, nq=4, qlen=12, quantize=True)
    dc = _core.doc_cells(col["ivf"], col["ivf_offsets"], col["ndocs"])
    assert dc[0].size < col["codes"].size  # documents repeat cells
    for params in (dict(nprobe=2, threshold=0.2, ndocs=100, n_exact=20, k=10),   # most candidates survive
                   dict(nprobe=8, threshold=0.3, ndocs=10, n_exact=5, k=5),      # a real cut
                   dict(nprobe=64, threshold=-np.inf, ndocs=300, n_exact=300, k=30)):
        want = run_search(_core, Q, S, col, **params)
        for s_arg in (S, None):
            got = run_search(_core, Q, s_arg, col, doc_cells=dc, **params)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])
        assert_topk_equivalent(run_search(ref, Q, S, col, doc_cells=dc, **params), want)
    params = dict(nprobe=4, threshold=0.0, ndocs=50, n_exact=10, k=5)
    with pytest.raises(ValueError, match="does not belong"):
        run_search(_core, Q, S, col, doc_cells=(dc[0], dc[1][:-1]), **params)
    with pytest.raises(ValueError, match="does not belong"):
        run_search(_core, Q, S, col, doc_cells=(dc[0][:-1], dc[1]), **params)
    shuffled = dc[1].copy()
    shuffled[1:-1] = shuffled[1:-1][::-1]
    with pytest.raises(ValueError, match="out of order"):
        run_search(_core, Q, S, col, doc_cells=(dc[0], shuffled), **params)
    bad = dc[0].copy()
    bad[:] = 64
    with pytest.raises(ValueError, match="nlist"):
        run_search(_core, Q, S, col, doc_cells=(bad, dc[1]), **params)


@native
@pytest.mark.parametrize("d", [8, 24, 40, 136])
def test_two_bit_decoder_on_partial_vectors(d):
    """The AVX-512 2-bit decoder works 16 dimensions at a time; d % 16 == 8 leaves an 8-dimension tail.
    Exact scores must match the reference's decompress + MaxSim for those widths too."""
    col = make_collection(50 + d, ndocs=70, d=d, nbits=2, nlist=12, max_len=40)
    Q, S = make_queries(d, col, nq=3, qlen=7)
    assert_topk_equivalent(run_exact(_core, Q, col, k=9), run_exact(ref, Q, col, k=9))
    params = dict(nprobe=12, threshold=-np.inf, ndocs=70, n_exact=70, k=9)
    assert_topk_equivalent(run_search(_core, Q, None, col, **params), run_exact(ref, Q, col, k=9))


@pytest.mark.parametrize("mod", BACKENDS)
def test_empty_inputs(mod):
    d, nbits = 64, 2
    cut = np.zeros((d, 3), np.float32)
    assert mod.compress(np.zeros((0, d), np.float32), cut, nbits).shape == (0, 16)
    cent = np.ones((4, d), np.float32)
    w = np.zeros((d, 4), np.float32)
    assert mod.decompress(np.zeros(0, np.uint16), np.zeros((0, 16), np.uint8), cent, w, nbits, True).shape == (0, d)
    ivf, ivo = mod.build_ivf(np.zeros(0, np.uint16), np.zeros(1, np.int64), 4)
    assert ivf.shape == (0,) and np.array_equal(ivo, np.zeros(5))
    col = dict(codes=np.zeros(0, np.uint16), packed=np.zeros((0, 16), np.uint8), doc_offsets=np.zeros(1, np.int64),
               centroids=cent, weights=w, nbits=nbits, ivf=ivf, ivf_offsets=ivo)
    Q = np.ones((2, 3, d), np.float32)
    S = np.ones((2, 3, 4), np.float32)
    for scores, docs in (run_search(mod, Q, S, col), run_exact(mod, Q, col)):
        assert np.all(docs == -1) and np.all(np.isneginf(scores))
    assert run_exact(mod, Q[:0], col)[0].shape == (0, 5)
    assert run_search(mod, Q[:0], S[:0], col)[1].shape == (0, 5)
    assert mod.maxsim(Q[:0], np.zeros((0, d), np.float32), np.zeros(3, np.int64)).shape == (0, 2)
    assert mod.maxsim(Q, np.zeros((0, d), np.float32), np.zeros(3, np.int64)).tolist() == [[0, 0], [0, 0]]


@pytest.mark.parametrize("mod", BACKENDS)
def test_build_info(mod):
    info = mod.build_info()
    for key in ("openmp", "openmp_info", "max_threads", "simd", "compiler"):
        assert key in info
    assert info["max_threads"] >= 1


# -------------------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("mod", BACKENDS)
def test_bad_inputs_raise(mod):
    col = make_collection(2, ndocs=10, d=64)
    Q, S = make_queries(2, col, nq=2, qlen=4)
    c = col
    res = np.zeros((5, 64), np.float32)
    with pytest.raises(TypeError, match="float32"):
        mod.compress(res.astype(np.float64), c["cutoffs"], 2)
    with pytest.raises(TypeError, match="ndarray"):
        mod.compress(res.tolist(), c["cutoffs"], 2)
    with pytest.raises(TypeError, match="float32"):
        mod.compress(res.astype(">f4"), c["cutoffs"], 2)
    with pytest.raises(ValueError, match="C-contiguous"):
        mod.compress(np.zeros((64, 5), np.float32).T, c["cutoffs"], 2)
    with pytest.raises(ValueError, match="cutoffs"):
        mod.compress(res, c["cutoffs"][:, :2], 2)
    with pytest.raises(ValueError, match="nbits"):
        mod.compress(res, c["cutoffs"], 3)
    with pytest.raises(ValueError, match="multiple of 8"):
        mod.compress(np.zeros((5, 12), np.float32), np.zeros((12, 3), np.float32), 2)
    with pytest.raises(ValueError, match="ascending"):
        mod.compress(res, np.ascontiguousarray(c["cutoffs"][:, ::-1]), 2)
    dargs = (c["packed"], c["centroids"], c["weights"], 2, True)
    with pytest.raises(TypeError, match="uint16"):
        mod.decompress(c["codes"].astype(np.int32), *dargs)
    with pytest.raises(ValueError, match="nlist"):
        mod.decompress(np.full_like(c["codes"], 16), *dargs)
    with pytest.raises(ValueError, match="packed"):
        mod.decompress(c["codes"][:-1], *dargs)
    with pytest.raises(ValueError, match="nlist"):
        mod.build_ivf(c["codes"], c["doc_offsets"], 8)  # codes reach 15
    with pytest.raises(ValueError, match="doc_offsets"):
        mod.build_ivf(c["codes"], c["doc_offsets"][::-1].copy(), 16)
    with pytest.raises(TypeError, match="int64"):
        mod.build_ivf(c["codes"], c["doc_offsets"].astype(np.int32), 16)
    with pytest.raises(ValueError, match="doc_offsets"):
        mod.maxsim(Q, np.zeros((3, 64), np.float32), np.array([0, 2], np.int64))
    with pytest.raises(ValueError, match="values"):
        mod.maxsim(Q, np.zeros((3, 32), np.float32), np.array([0, 3], np.int64))
    with pytest.raises(ValueError, match="Q"):
        mod.maxsim(Q[0], np.zeros((3, 64), np.float32), np.array([0, 3], np.int64))
    with pytest.raises(ValueError, match="at least one token"):
        mod.maxsim(Q[:, :0], np.zeros((3, 64), np.float32), np.array([0, 3], np.int64))
    with pytest.raises(ValueError, match="num_threads"):
        mod.maxsim(Q, np.zeros((3, 64), np.float32), np.array([0, 3], np.int64), num_threads=-1)
    with pytest.raises(ValueError, match="S"):
        run_search(mod, Q, S[:, :, :-1], col)
    with pytest.raises(ValueError, match="allowed"):
        run_search(mod, Q, S, col, np.ones(3, np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        run_search(mod, Q, S, col, np.ones(10, bool))
    with pytest.raises(ValueError, match="k"):
        run_search(mod, Q, S, col, k=0)
    with pytest.raises(ValueError, match="nprobe"):
        run_search(mod, Q, S, col, nprobe=0)
    with pytest.raises(ValueError, match="ivf"):
        run_search(mod, Q, S, col | {"ivf": np.full_like(col["ivf"], 99)}, nprobe=16)
    with pytest.raises(ValueError, match="ivf_offsets"):
        run_search(mod, Q, S, col | {"ivf_offsets": col["ivf_offsets"][:-1].copy()})
    with pytest.raises(ValueError, match="weights"):
        run_exact(mod, Q, col | {"weights": col["weights"][:, :2].copy()})
    with pytest.raises(ValueError, match="k"):
        run_exact(mod, Q, col, k=0)
    with pytest.raises(ValueError, match="num_threads"):
        run_exact(mod, Q, col, num_threads=-2)
    # offsets that keep their first and last entries but decrease inside, or dip below 0, are refused by
    # every kernel that reads them, naming where (the native check is one branch-free pass, then a scan)
    for name in ("doc_offsets", "ivf_offsets"):
        for pos in (1, len(col[name]) // 2, len(col[name]) - 2):
            bad = col[name].copy()
            bad[pos] = bad[pos + 1] + 1  # a decrease at pos + 1
            with pytest.raises(ValueError, match=f"{name}.*non-decreasing.*position {pos + 1}"):
                run_search(mod, Q, S, col | {name: bad})
        bad = col[name].copy()
        bad[1] = -5
        with pytest.raises(ValueError, match=f"{name}.*non-decreasing.*position 1"):
            run_search(mod, Q, S, col | {name: bad})


@pytest.mark.parametrize("mod", BACKENDS)
def test_centroid_scores_bad_inputs_raise(mod):
    rng = np.random.default_rng(4)
    Q = _unit(rng.standard_normal((2, 5, 64)))
    cent = _unit(rng.standard_normal((20, 64)))
    Ct = np.ascontiguousarray(cent.T)
    assert mod.centroid_scores(Q[:0], Ct).shape == (0, 5, 20)
    with pytest.raises(TypeError, match="float32"):
        mod.centroid_scores(Q.astype(np.float64), Ct)
    with pytest.raises(TypeError, match="float32"):
        mod.centroid_scores(Q, Ct.astype(np.float16))
    with pytest.raises(TypeError, match="ndarray"):
        mod.centroid_scores(Q.tolist(), Ct)
    with pytest.raises(ValueError, match="centroids_t"):
        mod.centroid_scores(Q, cent)  # (nlist, d), not transposed
    with pytest.raises(ValueError, match="C-contiguous"):
        mod.centroid_scores(Q, cent.T)
    with pytest.raises(ValueError, match="Q"):
        mod.centroid_scores(Q[0], Ct)
    with pytest.raises(ValueError, match="centroids_t"):
        mod.centroid_scores(Q, Ct[None])
    with pytest.raises(ValueError, match="at least one token"):
        mod.centroid_scores(Q[:, :0], Ct)
    with pytest.raises(ValueError, match="multiple of 8"):
        mod.centroid_scores(np.zeros((1, 2, 12), np.float32), np.zeros((12, 4), np.float32))
    with pytest.raises(ValueError, match="nlist"):
        mod.centroid_scores(Q, np.zeros((64, 0), np.float32))
    # more than 65536 centroids are scored (an index of that many stores uint32 codes)
    assert mod.centroid_scores(np.ones((1, 1, 8), np.float32), np.ones((8, 65537), np.float32)).shape == (1, 1, 65537)
    with pytest.raises(ValueError, match="num_threads"):
        mod.centroid_scores(Q, Ct, num_threads=-1)


@pytest.mark.parametrize("mod", BACKENDS)
def test_empty_cells_are_never_probed(mod):
    """A probe is not spent on a cell with no document: cells 0-3 score highest for every query token
    but hold no token, so with nprobe 1 a search that probed them would find nothing."""
    col = make_collection(21, ndocs=80, d=64, nbits=2, nlist=16)
    col["codes"] = (col["codes"] % 12 + 4).astype(np.uint16)  # cells 0-3 empty
    col["ivf"], col["ivf_offsets"] = ref.build_ivf(col["codes"], col["doc_offsets"], 16)
    Q, _ = make_queries(21, col, nq=3, qlen=6)
    col["centroids"][:4] = _unit(Q[0].mean(axis=0, keepdims=True) + 1e-3 * np.arange(4)[:, None])
    S = np.ascontiguousarray(Q @ col["centroids"].T)
    assert (S[0].argmax(axis=1) < 4).all()  # the empty cells are each token's best
    scores, docs = run_search(mod, Q, S, col, nprobe=1, threshold=-1.0, ndocs=40, n_exact=20, k=5)
    assert (docs >= 0).all()
    assert_topk_equivalent((scores, docs), run_search(ref, Q, S, col, nprobe=1, threshold=-1.0, ndocs=40,
                                                      n_exact=20, k=5))


# ------------------------------------------------------------------------------------------ code widths
def _widen(col: dict) -> dict:
    """The same collection with its codes stored as uint32 (the width of an index above 65536 centroids)."""
    return {**col, "codes": col["codes"].astype(np.uint32)}


@pytest.mark.parametrize("mod", BACKENDS)
@pytest.mark.parametrize("nbits", NBITS)
def test_uint32_codes_give_what_uint16_codes_give(mod, nbits):
    """Every kernel that reads codes gives bit-identical results for the same ids as uint16 or uint32."""
    col = make_collection(61, ndocs=50, d=64, nbits=nbits, nlist=40)
    wide = _widen(col)
    Q, S = make_queries(61, col)
    dargs = (col["packed"], col["centroids"], col["weights"], nbits, True)
    np.testing.assert_array_equal(mod.decompress(wide["codes"], *dargs), mod.decompress(col["codes"], *dargs))
    for got, want in zip(mod.build_ivf(wide["codes"], col["doc_offsets"], 40),
                         mod.build_ivf(col["codes"], col["doc_offsets"], 40)):
        np.testing.assert_array_equal(got, want)
    for params in (dict(nprobe=2, ndocs=20, n_exact=8), dict(nprobe=40, ndocs=999, n_exact=999, threshold=-9.0)):
        for s_arg in (S, None):
            want, got = run_search(mod, Q, s_arg, col, **params), run_search(mod, Q, s_arg, wide, **params)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])
    want, got = run_exact(mod, Q, col), run_exact(mod, Q, wide)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])


@native
@pytest.mark.parametrize("nbits", [2, 4])
def test_more_than_65536_centroids_native_matches_reference(nbits):
    """nlist 70000 with uint32 codes (ids above 65535 included): native against the reference."""
    col = make_collection(62, ndocs=40, d=64, nbits=nbits, nlist=70_000, max_len=30)
    assert col["codes"].dtype == np.uint32 and col["codes"].max() > 65535
    Q, S = make_queries(62, col, nq=2)
    dargs = (col["codes"], col["packed"], col["centroids"], col["weights"], nbits)
    np.testing.assert_array_equal(_core.decompress(*dargs, False), ref.decompress(*dargs, False))
    np.testing.assert_allclose(_core.decompress(*dargs, True), ref.decompress(*dargs, True), rtol=1e-6, atol=1e-6)
    for got, want in zip(_core.build_ivf(col["codes"], col["doc_offsets"], 70_000),
                         (col["ivf"], col["ivf_offsets"])):
        np.testing.assert_array_equal(got, want)
    dc = _core.doc_cells(col["ivf"], col["ivf_offsets"], col["ndocs"])
    want_dc = ref.doc_cells(col["ivf"], col["ivf_offsets"], col["ndocs"])
    assert dc[0].dtype == want_dc[0].dtype == np.uint32
    np.testing.assert_array_equal(dc[0], want_dc[0])
    np.testing.assert_array_equal(dc[1], want_dc[1])
    for params in (dict(nprobe=4, ndocs=20, n_exact=8), dict(nprobe=70_000, ndocs=999, n_exact=999, threshold=-9.0)):
        want = run_search(ref, Q, S, col, **params)
        assert_topk_equivalent(run_search(_core, Q, S, col, **params), want)
        assert_topk_equivalent(run_search(_core, Q, None, col, doc_cells=dc, **params), want)
    assert_topk_equivalent(run_exact(_core, Q, col), run_exact(ref, Q, col))
    # every cell probed and every candidate kept: PLAID is the exhaustive search
    full = dict(nprobe=70_000, ndocs=999, n_exact=999, threshold=-9.0)
    assert_topk_equivalent(run_search(_core, Q, None, col, **full), run_exact(_core, Q, col))


@pytest.mark.parametrize("mod", BACKENDS)
def test_code_width_errors_say_what_to_do(mod):
    col = make_collection(63, ndocs=20, d=64, nlist=16)
    dargs = (col["packed"], col["centroids"], col["weights"], 2, True)
    with pytest.raises(TypeError, match="uint16 .* or uint32"):
        mod.decompress(col["codes"].astype(np.int64), *dargs)
    many = np.zeros((70_000, 64), np.float32)
    with pytest.raises(ValueError, match="65536"):  # uint16 codes cannot address more centroids
        mod.decompress(col["codes"], col["packed"], many, col["weights"], 2, True)
    assert mod.decompress(col["codes"].astype(np.uint32), col["packed"], many, col["weights"], 2, True).shape == \
        (col["codes"].shape[0], 64)
    with pytest.raises(ValueError, match="nlist"):
        mod.build_ivf(col["codes"], col["doc_offsets"], 70_000)
    assert mod.build_ivf(col["codes"].astype(np.uint32), col["doc_offsets"], 70_000)[1].shape == (70_001,)


@native
def test_doc_cells_must_have_the_codes_dtype():
    col = make_collection(64, ndocs=30, d=64, nlist=16)
    dc = _core.doc_cells(col["ivf"], col["ivf_offsets"], col["ndocs"])  # uint16: nlist <= 65536
    Q, S = make_queries(64, col)
    with pytest.raises(TypeError, match="doc_cells"):
        run_search(_core, Q, S, _widen(col), doc_cells=dc)
    wide_dc = (dc[0].astype(np.uint32), dc[1])
    np.testing.assert_array_equal(run_search(_core, Q, S, _widen(col), doc_cells=wide_dc)[1],
                                  run_search(_core, Q, S, col, doc_cells=dc)[1])

