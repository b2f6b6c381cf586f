"""The lookup-table exact stage (search's token_scales, exact_scores="adc"): the token scales, every backend's
scores against the definition, the SIMD copies, bad input, and the index around it."""

from __future__ import annotations

import numpy as np
import pytest
from synth import clustered_collection
from test_kernels import (
    _core,
    _unit,
    assert_topk_equivalent,
    make_collection,
    make_queries,
    native,
    run_capped,
    run_search,
)
from test_pq_codec import pq_collection, pq_decode

import plaidx
from plaidx.engine import cellq, kernels
from plaidx.engine import reference as ref

BACKENDS = [pytest.param(ref, id="reference"), pytest.param(_core, id="native", marks=native)]


def _decoded(col: dict) -> np.ndarray:
    """Every token decoded (not normalised) by the definition of its codec."""
    if isinstance(col["weights"], tuple):
        return pq_decode(col)
    return ref.decompress(col["codes"], col["packed"], col["centroids"], col["weights"], col["nbits"], False)


def _scales(col: dict, mod=ref) -> np.ndarray:
    return mod.token_scales(col["codes"], col["packed"], col["centroids"], col["weights"], col["nbits"]).astype(
        np.float16)


def _adc_score(q: np.ndarray, Sq: np.ndarray, col: dict, scales: np.ndarray, doc: int) -> tuple[float, float]:
    """One document's lookup-stage score from the definition (float64, no table rounding), and how far the table's
    rounding may move it: sum_a max_t (S[a, c_t] + s_t <q_a, w_t>) * scale_t, each entry off by at most half a
    table unit u_a, so each token's value by pb / 2 * u_a * s_t * scale_t."""
    lo, hi = col["doc_offsets"][doc], col["doc_offsets"][doc + 1]
    codes = col["codes"][lo:hi].astype(np.int64)
    v = _decoded(col)[lo:hi].astype(np.float64)
    w = v - col["centroids"][codes]  # s_t * w_t, the residual part
    sc = scales[lo:hi].astype(np.float64)
    tok = (Sq[:, codes] + q.astype(np.float64) @ w.T) * sc  # (qlen, ntok)
    table, levels = ref._codebook("test", col["weights"], q.shape[1], col["nbits"])
    _, u = ref.adc_table(q, table)
    level = levels[col["packed"][lo:hi, -1] >> 4].astype(np.float64)
    slack = (table.shape[0] / 2 + 0.01) * u.astype(np.float64)[:, None] * (level * sc)[None]
    return float(tok.max(axis=1).sum()), float(slack.max(axis=1).sum())


@pytest.mark.parametrize("mod", BACKENDS)
@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_token_scales_are_the_decoded_tokens_inverse_norms(mod, nbits):
    col = make_collection(5 + nbits, ndocs=40, d=64, nbits=nbits, nlist=12)
    got = mod.token_scales(col["codes"], col["packed"], col["centroids"], col["weights"], nbits)
    assert got.dtype == np.float32 and got.shape == col["codes"].shape
    np.testing.assert_allclose(got, 1 / np.linalg.norm(_decoded(col).astype(np.float64), axis=1), rtol=1e-5)
    pq = pq_collection(9 + nbits, nbits, d=64, ndocs=40, nlist=12) if nbits != 8 else None
    if pq is not None:
        got = mod.token_scales(pq["codes"], pq["packed"], pq["centroids"], pq["weights"], nbits)
        np.testing.assert_allclose(got, 1 / np.linalg.norm(pq_decode(pq).astype(np.float64), axis=1), rtol=1e-5)


def test_token_scales_cap_at_the_smallest_norm():
    """A token that decodes to (nearly) zero is scaled by 2**14, not by an infinity: its score stays finite."""
    col = make_collection(3, ndocs=5, d=64, nbits=2, nlist=4)
    col["weights"] = np.zeros_like(col["weights"])
    col["centroids"][col["codes"][0]] = 0
    for mod in (ref, _core) if _core is not None else (ref,):
        got = mod.token_scales(col["codes"], col["packed"], col["centroids"], col["weights"], 2)
        assert got[0] == 2.0 ** 14 and np.isfinite(got).all()


def test_the_table_stays_in_range_and_rounds_each_entry():
    """Entries within [-127, 127] (less for many packed bytes), each the rounded product sum; a zero query token's
    column is zero."""
    rng = np.random.default_rng(1)
    table = (rng.standard_normal((16, 256, 4)) * 0.05).astype(np.float32)
    q = rng.standard_normal((5, 64)).astype(np.float32)
    q[3] = 0
    lut, u = ref.adc_table(q, table)
    assert lut.dtype == np.int8 and lut.shape == (16, 256, 5)
    assert np.abs(lut.astype(np.int32)).max() <= 127 and np.abs(lut).max() >= 64  # the range is used
    assert not lut[:, :, 3].any() and u[3] == 0
    exact = np.einsum("pbv,apv->pba", table.astype(np.float64), q.reshape(5, 16, 4).astype(np.float64))
    ok = u > 0
    assert np.abs(lut[:, :, ok] * u[ok] - exact[:, :, ok]).max() <= 0.5001 * u[ok].max()
    assert ref.adc_entry_peak(300) * 300 <= 32767 < 127 * 300


@native
@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
@pytest.mark.parametrize("qlen", [1, 13, 32, 40])
@pytest.mark.parametrize("d", [64, 136])
def test_adc_scores_match_the_reference_and_the_definition(d, qlen, nbits):
    """search(..., token_scales=...) scores the n_exact candidates by the lookup tables: the reference's documents
    and scores, bit for bit with 1 or 2 threads, each score the definition's within the table's rounding, and
    within a few hundredths of the float step 5 where every document is scored."""
    col = make_collection(60 + qlen + nbits, ndocs=300, d=d, nbits=nbits, nlist=40, max_len=37)
    Q, S = make_queries(qlen, col, nq=3, qlen=qlen)
    cells = _core.quantize_rows(col["centroids"])
    scales = _scales(col, _core)
    np.testing.assert_array_equal(scales, _scales(col))  # the float16 values agree
    for params in (dict(nprobe=3, threshold=0.0, ndocs=80, n_exact=30, k=10),
                   dict(nprobe=40, threshold=-1.0, ndocs=300, n_exact=300, k=12)):
        want = run_search(ref, Q, S, col, token_scales=scales, **params)
        one = run_search(_core, Q, S, col, num_threads=1, token_scales=scales, **params)
        assert_topk_equivalent(one, want, tol=1e-5)
        two = run_search(_core, Q, S, col, num_threads=2, token_scales=scales, **params)
        np.testing.assert_array_equal(two[0], one[0])
        np.testing.assert_array_equal(two[1], one[1])
        for qi in range(Q.shape[0]):
            for sc, doc in zip(*[x[qi] for x in one]):
                exact, slack = _adc_score(Q[qi], S[qi], col, scales, doc)
                assert abs(sc - exact) <= slack + 1e-4 * abs(exact)
        q8 = run_search(_core, Q, None, col, cell_codes=cells, token_scales=scales, **params)  # int8 cell scores
        S8 = cellq.quantized_cell_scores(Q, cells)
        assert_topk_equivalent(q8, run_search(ref, Q, S8, col, token_scales=scales, **params), tol=1e-5)
        if params["n_exact"] == 300:  # every document scored: the float scores of step 5, nearly
            fl = run_search(_core, Q, S, col, **params)
            np.testing.assert_allclose(one[0], fl[0], atol=0.02 * qlen)


@native
@pytest.mark.parametrize("nbits,d", [(1, 64), (2, 64), (2, 136), (4, 72)])
def test_adc_over_pq_matches_the_reference(nbits, d):
    """Over a pq codebook the levels scale each token's lookup sum: the reference's results and the definition's
    scores."""
    col = pq_collection(30 + nbits, nbits, d=d, ndocs=150, nlist=24, max_len=30)
    Q, S = make_queries(30 + nbits, col, nq=3, qlen=13)
    scales = _scales(col, _core)
    params = dict(nprobe=24, threshold=-1.0, ndocs=150, n_exact=150, k=10)
    got = run_search(_core, Q, S, col, token_scales=scales, **params)
    assert_topk_equivalent(got, run_search(ref, Q, S, col, token_scales=scales, **params), tol=1e-5)
    for qi in range(Q.shape[0]):
        for sc, doc in zip(*[x[qi] for x in got]):
            exact, slack = _adc_score(Q[qi], S[qi], col, scales, doc)
            assert abs(sc - exact) <= slack + 1e-4 * abs(exact)
    unit = ref.maxsim(Q, _unit(pq_decode(col)), col["doc_offsets"])  # and close to float MaxSim
    np.testing.assert_allclose(got[0], np.take_along_axis(unit, got[1], axis=1), atol=0.02 * 13)


_CAPPED = r"""
import sys, numpy as np
from plaidx import _core
a = np.load(sys.argv[1])
out = {"dispatch": np.array(_core.build_info()["simd_dispatch"])}
out["s"], out["d"] = _core.search(a["Q"], a["S"], a["codes"], a["packed"], a["doc_offsets"], a["ivf"], a["ivf_offsets"],
                                  a["centroids"], a["weights"], int(a["nbits"]), np.zeros(0, np.uint8), 30, -1.0, 200,
                                  200, 7, token_scales=a["scales"])
np.savez(sys.argv[2], **out)
"""


@native
@pytest.mark.parametrize("level", ["baseline", "avx2"])
def test_every_simd_copy_scores_like_the_reference(level, tmp_path):
    col = make_collection(71, ndocs=120, d=136, nbits=2, nlist=30, max_len=25)
    Q, S = make_queries(71, col, nq=3, qlen=37)
    scales = _scales(col)
    arrays = {k: v for k, v in col.items() if isinstance(v, np.ndarray)}
    got = run_capped(_CAPPED, level, tmp_path, Q=Q, S=S, scales=scales, nbits=np.array(2), **arrays)
    want = run_search(ref, Q, S, col, nprobe=30, threshold=-1.0, ndocs=200, n_exact=200, k=7, token_scales=scales)
    assert_topk_equivalent((got["s"], got["d"]), want, tol=1e-5)


@pytest.mark.parametrize("mod", BACKENDS)
def test_adc_bad_input_is_a_clear_error(mod):
    col = make_collection(4, ndocs=30, d=64, nbits=2, nlist=8)
    Q, S = make_queries(4, col, nq=1, qlen=5)
    scales = _scales(col)
    with pytest.raises(ValueError, match="float16 array"):
        run_search(mod, Q, S, col, token_scales=scales.astype(np.float32))
    with pytest.raises(ValueError, match=r"token_scales must have shape \(n,\)"):
        run_search(mod, Q, S, col, token_scales=scales[:-1])
    with pytest.raises(ValueError, match="pass one of the three"):
        run_search(mod, Q, S, col, token_scales=scales, exact_int8=True)
    kv, ks, _ = ref.quantize_rows(_decoded(col))
    with pytest.raises(ValueError, match="pass one of the three"):
        run_search(mod, Q, S, col, token_scales=scales, kept=(kv, ks))


# ------------------------------------------------------------------------------------------ the index
def _spread_magnitudes(col: dict) -> dict:
    """col with each cell's centroid scaled by 2^e, e from -18 to 20 across the cells, and its residual weights
    shrunk to match the smallest: the tokens' inverse norms then cover the float16 range, from the 2**14 cap
    through normal values to subnormals (below 2**-14, from norms above 2**14) and the rounding between them."""
    nlist = col["centroids"].shape[0]
    col = dict(col)
    col["centroids"] = (col["centroids"] * np.exp2(np.linspace(-18, 20, nlist))[:, None]).astype(np.float32)
    col["weights"] = (col["weights"] * np.float32(2.0 ** -20)).astype(np.float32)
    return col


@native
def test_the_native_float16_rounding_is_numpys():
    """float_to_half_bits (the scales derived on demand) rounds as astype(np.float16): every float16 value, the
    float32 values either side of it and of each midpoint between two of them (the ties, to even), the
    subnormals of both, overflow, infinities, NaN and random floats of every exponent."""
    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = np.sort(np.unique(np.abs(halves[np.isfinite(halves)]).astype(np.float32)))
    mids = ((finite[:-1].astype(np.float64) + finite[1:]) / 2).astype(np.float32)  # exact in float32
    mids = np.concatenate([mids, [np.float32(65520.0)]])  # the tie between the largest float16 and infinity
    base = np.concatenate([finite, mids])
    near = np.concatenate([base, np.nextafter(base, np.float32(np.inf)), np.nextafter(base, np.float32(0))])
    rng = np.random.default_rng(0)
    rand = rng.integers(0, 1 << 32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    special = np.array([np.inf, np.nan, 1e-45, 2.0 ** -25, 2.0 ** -24, 65504.0, 65519.99, 1e38], np.float32)
    x = np.concatenate([near, -near, rand, special, -special]).astype(np.float32)
    with np.errstate(over="ignore"):  # the overflows to infinity are part of the test
        want = x.astype(np.float16).view(np.uint16)
    got = _core.float16_bits(x)
    nan = np.isnan(x)
    np.testing.assert_array_equal(got[~nan], want[~nan])
    assert (got[nan] & 0x7C00 == 0x7C00).all() and (got[nan] & 0x3FF != 0).all()  # NaN stays NaN


@pytest.mark.parametrize("mod", BACKENDS)
@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_scales_derived_on_demand_are_the_rounded_scales_and_search_alike(mod, nbits):
    """token_scales_done: a search fills the scales of the candidates it scores (and only those) with
    token_scales' values rounded to float16 as numpy rounds them, and returns what the search with every
    token's scales returns; a second search reuses them."""
    col = _spread_magnitudes(make_collection(70 + nbits, ndocs=200, d=64, nbits=nbits, nlist=40, max_len=30))
    Q, S = make_queries(16, col, nq=4, qlen=16)
    eager = _scales(col, mod)
    subnormal = (eager != 0) & (np.abs(eager) < np.float16(2.0 ** -14))
    assert subnormal.any() and (eager == np.float16(2.0 ** 14)).any() and (eager > 1).any()  # the range covered
    ndocs = col["doc_offsets"].shape[0] - 1
    for params in (dict(nprobe=2, threshold=0.0, ndocs=40, n_exact=12, k=5),
                   dict(nprobe=40, threshold=-1.0, ndocs=200, n_exact=200, k=8)):
        scales, done = np.zeros_like(eager), np.zeros(ndocs, np.uint8)
        want = run_search(mod, Q, S, col, token_scales=eager, **params)
        got = run_search(mod, Q, S, col, token_scales=scales, token_scales_done=done, **params)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        flagged = np.repeat(done.astype(bool), np.diff(col["doc_offsets"]))
        assert set(np.unique(done)) <= {0, 1}
        np.testing.assert_array_equal(scales[flagged].view(np.uint16), eager[flagged].view(np.uint16))
        assert not scales[~flagged].any()  # nothing written outside the scored documents
        if params["n_exact"] == ndocs:
            assert done.all()
        else:
            assert 0 < done.sum() <= Q.shape[0] * params["n_exact"]
        again = run_search(mod, Q, S, col, token_scales=scales, token_scales_done=done, **params)
        np.testing.assert_array_equal(again[1], want[1])


@native
def test_scales_derived_on_demand_by_threads_and_by_queries_in_parallel():
    """Queries searched in parallel (one per thread) share the arrays they fill: the same results and values as
    one thread, and as the reference."""
    col = _spread_magnitudes(make_collection(81, ndocs=300, d=64, nbits=2, nlist=40, max_len=30))
    Q, S = make_queries(16, col, nq=8, qlen=16)
    ndocs = col["doc_offsets"].shape[0] - 1
    params = dict(nprobe=8, threshold=0.0, ndocs=150, n_exact=100, k=10)
    runs = []
    for mod, threads in ((ref, 0), (_core, 1), (_core, 2)):
        scales, done = np.zeros(col["codes"].shape[0], np.float16), np.zeros(ndocs, np.uint8)
        kw = {"num_threads": threads} if threads else {}
        runs.append((run_search(mod, Q, S, col, token_scales=scales, token_scales_done=done, **kw, **params),
                     scales, done))
    (want, want_scales, want_done) = runs[0]
    for got, scales, done in runs[1:]:
        assert_topk_equivalent(got, want, tol=1e-5)
        np.testing.assert_array_equal(done, want_done)
        np.testing.assert_array_equal(scales.view(np.uint16), want_scales.view(np.uint16))
    np.testing.assert_array_equal(runs[1][0][1], runs[2][0][1])


@pytest.mark.parametrize("mod", BACKENDS)
def test_scales_derived_on_demand_bad_input_is_a_clear_error(mod):
    col = make_collection(90, ndocs=30, d=64, nbits=2, nlist=8)
    Q, S = make_queries(4, col, nq=1, qlen=4)
    n, ndocs = col["codes"].shape[0], col["doc_offsets"].shape[0] - 1
    scales, done = np.zeros(n, np.float16), np.zeros(ndocs, np.uint8)
    with pytest.raises(ValueError, match="give token_scales"):
        run_search(mod, Q, S, col, token_scales_done=done)
    with pytest.raises(ValueError, match=r"token_scales_done must have shape \(ndocs,\)"):
        run_search(mod, Q, S, col, token_scales=scales, token_scales_done=done[:-1])
    with pytest.raises(TypeError, match="uint8"):
        run_search(mod, Q, S, col, token_scales=scales, token_scales_done=done.astype(np.int32))
    for frozen in ("scales", "done"):
        s2, d2 = scales.copy(), done.copy()
        (s2 if frozen == "scales" else d2).flags.writeable = False
        with pytest.raises(ValueError, match="pass writable arrays"):
            run_search(mod, Q, S, col, token_scales=s2, token_scales_done=d2)


def test_an_index_derives_its_scales_as_its_searches_need_them(tmp_path):
    """A generation's searches derive only their candidates' scales (no pass over every token), with the results of
    the scales derived all at once."""
    rng = np.random.default_rng(8)
    docs = [_unit(rng.standard_normal((int(n), 64))) for n in rng.integers(20, 60, 400)]
    queries = np.stack([_unit(d[:8] + 0.05 * rng.standard_normal((8, 64))) for d in docs[:6]]).astype(np.float32)
    index = plaidx.Index.build(tmp_path / "idx", docs, nbits=2, nlist=64, residual_codec="pq")
    snap = index._snap
    adc = plaidx.SearchParams(exact_scores="adc")
    lazy = index.search(queries, k=5, params=adc)
    assert snap._token_scales is None  # not derived in full
    scales, done = snap.search_token_scales()
    assert done is not None and 0 < done.sum() < len(docs)
    assert snap.search_token_scales()[0] is scales  # one pair per generation
    full = snap.token_scales()
    assert snap.search_token_scales() == (full, None)  # derived in full: the search takes them
    flagged = np.repeat(done.astype(bool), np.diff(np.asarray(snap.a["doc_offsets"])))
    np.testing.assert_array_equal(scales[flagged].view(np.uint16), full[flagged].view(np.uint16))
    eager = index.search(queries, k=5, params=adc)
    np.testing.assert_array_equal(lazy[0], eager[0])
    np.testing.assert_array_equal(lazy[1], eager[1])
    new = index.add([queries[2] + 0.01])  # a new generation starts over
    assert index._snap.search_token_scales()[1] is not None
    assert index.search(queries[2:3], k=1, params=adc)[1][0, 0] == new[0]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    docs, queries, _ = clustered_collection(n_docs=300, dim=64, mean_len=24, n_queries=16, seed=21)
    index = plaidx.Index.build(tmp_path_factory.mktemp("adc") / "idx", docs, nbits=2, nlist=64, residual_codec="pq")
    return index, docs, queries


def test_index_search_with_adc_is_the_kernel_with_the_derived_scales(built):
    """exact_scores="adc" (the default on the CPU) passes the index's derived token scales to the kernels; its
    recall against exhaustive search is the float stage's within 0.02."""
    index, _, queries = built
    snap, a = index._snap, index._snap.a
    scales = snap.token_scales()
    assert scales.dtype == np.float16 and scales.shape == (snap.n_tokens,)
    want = kernels.token_scales(a["codes"], a["residuals"], snap.codec.centroids, snap.codec.kernel_weights,
                                snap.nbits).astype(np.float16)
    np.testing.assert_array_equal(scales, want)
    assert snap.token_scales() is scales  # derived once per generation
    from plaidx.engine import snapshot

    chunk, snapshot._SCALES_CHUNK = snapshot._SCALES_CHUNK, 1000  # derived in chunks: the same values
    try:
        np.testing.assert_array_equal(plaidx.Index.open(index.path)._snap.token_scales(), scales)
    finally:
        snapshot._SCALES_CHUNK = chunk
    p = plaidx.SearchParams().resolve(10, n_tokens=snap.n_tokens)
    ivf, ivf_offsets = snap.ivf()
    cells = snap.cell_codes if kernels.INT8_VNNI else None
    S = None if kernels.BACKEND_NAME == "native" else (
        cellq.quantized_cell_scores(queries, cells) if cells is not None
        else kernels.centroid_scores(queries, snap.centroids_t))
    extra = {"cell_codes": cells} if kernels.BACKEND_NAME == "native" else {}
    direct = kernels.search(queries, S, a["codes"], a["residuals"], a["doc_offsets"], ivf, ivf_offsets,
                            snap.codec.centroids, snap.codec.kernel_weights, snap.nbits, np.zeros(0, np.uint8),
                            p.nprobe, p.centroid_score_threshold, p.ndocs, p.n_exact, 10, token_scales=scales,
                            **extra)
    got = index.search(queries, k=10, params=plaidx.SearchParams(exact_scores="adc"))
    np.testing.assert_array_equal(got[0], direct[0])
    np.testing.assert_array_equal(got[1], index.ids[direct[1]])
    default = index.search(queries, k=10)
    np.testing.assert_array_equal(default[1], got[1])  # the default on the CPU
    _, truth = index.search(queries, k=10, exact=True)
    f32 = index.search(queries, k=10, params=plaidx.SearchParams(exact_scores="float32"))
    overlap = [np.mean([len(set(r) & set(t)) / 10 for r, t in zip(ids, truth)]) for ids in (got[1], f32[1])]
    assert overlap[1] > 0.8 and abs(overlap[0] - overlap[1]) <= 0.02


def test_added_documents_get_their_scales(built, tmp_path):
    """Each committed generation derives its own scales: a document added (or left after a delete) is scored by
    the lookups like the others, and found."""
    _, docs, queries = built
    index = plaidx.Index.build(tmp_path / "idx", docs[:200], nbits=2, nlist=64, residual_codec="pq")
    before = index._snap.token_scales().shape[0]
    new = index.add([queries[3] + 0.01])  # a document that matches query 3 best
    assert index._snap.token_scales().shape[0] == before + queries[3].shape[0]
    _, ids = index.search(queries[3:4], k=3, params=plaidx.SearchParams(exact_scores="adc"))
    assert ids[0, 0] == new[0]
    index.delete([int(new[0])])
    _, ids = index.search(queries[3:4], k=3, params=plaidx.SearchParams(exact_scores="adc"))
    assert new[0] not in ids


def test_adc_is_cpu_only_and_not_with_the_tier(built, tmp_path):
    index, docs, queries = built
    with pytest.raises(ValueError, match="exact_scores='adc' has no effect while the rerank tier"):
        tier = plaidx.Index.build(tmp_path / "tier", docs[:40], nbits=2, nlist=16, keep_vectors="int8")
        tier.search(queries, k=5, params=plaidx.SearchParams(exact_scores="adc"))
    with pytest.raises(ValueError, match="exact_scores must be one of"):
        index.search(queries, k=5, params=plaidx.SearchParams(exact_scores="lut"))


_AMX_OFF = r"""
import sys, numpy as np
from plaidx import _core
a = np.load(sys.argv[1], allow_pickle=False)
assert not _core.build_info()["int8_amx"]
out = {}
for key in [k for k in a.files if k.startswith("Q")]:
    tag = key[1:]
    c = {n: a[n + tag] for n in ("codes", "packed", "doc_offsets", "ivf", "ivf_offsets", "centroids", "weights")}
    cells = _core.quantize_rows(c["centroids"])
    for thr in (0.0, 0.3):
        out[f"s{tag}_{thr}"], out[f"d{tag}_{thr}"] = _core.search(
            a[key], None, c["codes"], c["packed"], c["doc_offsets"], c["ivf"], c["ivf_offsets"], c["centroids"],
            c["weights"], 2, np.zeros(0, np.uint8), 3, thr, 60, 20, 8, cell_codes=cells)
    kept = (a["kv" + tag], a["ks" + tag])
    out[f"s{tag}_kept"], out[f"d{tag}_kept"] = _core.search(
        a[key], None, c["codes"], c["packed"], c["doc_offsets"], c["ivf"], c["ivf_offsets"], c["centroids"],
        c["weights"], 2, np.zeros(0, np.uint8), 3, 0.0, 60, 20, 8, cell_codes=cells, kept=kept)
    out[f"k{tag}"] = _core.kept_scores(a[key], kept, c["doc_offsets"], np.arange(c["doc_offsets"].size - 1))
np.savez(sys.argv[2], **out)
"""


@native
@pytest.mark.skipif(_core is None or not _core.build_info().get("int8_amx"), reason="no AMX-INT8 on this CPU")
def test_amx_cell_scores_are_the_vnni_ones(tmp_path):
    """The AMX tile kernels give the VNNI kernels' values bit for bit, so the same searches: the cell scores (d 64,
    128 and 192, queries of 5 to 40 tokens, nlist with cells past the last group of 32 in a block, two
    thresholds) and the kept int8 vectors' MaxSim (documents of 1 to 40 tokens: whole groups of 16 and the rest),
    in the search's rerank tier and in kept_scores."""
    import os
    import subprocess
    import sys

    arrays, want = {}, {}
    kept_want = {}
    for d, qlen, nlist in ((64, 5, 40), (128, 32, 100), (192, 17, 64), (128, 40, 70)):
        tag = f"{d}_{qlen}_{nlist}"
        col = make_collection(d + qlen, ndocs=120, d=d, nbits=2, nlist=nlist, max_len=40)
        Q, _ = make_queries(d, col, nq=2, qlen=qlen)
        kv, ks, _ = ref.quantize_rows(_decoded(col))
        arrays.update({"Q" + tag: Q, "kv" + tag: kv, "ks" + tag: ks})
        for n in ("codes", "packed", "doc_offsets", "ivf", "ivf_offsets", "centroids", "weights"):
            arrays[n + tag] = col[n]
        cells = _core.quantize_rows(col["centroids"])
        for thr in (0.0, 0.3):
            want[f"{tag}_{thr}"] = run_search(_core, Q, None, col, nprobe=3, threshold=thr, ndocs=60, n_exact=20, k=8,
                                              cell_codes=cells)
        want[f"{tag}_kept"] = run_search(_core, Q, None, col, nprobe=3, threshold=0.0, ndocs=60, n_exact=20, k=8,
                                         cell_codes=cells, kept=(kv, ks))
        kept_want[tag] = _core.kept_scores(Q, (kv, ks), col["doc_offsets"], np.arange(120))
    np.savez(tmp_path / "in.npz", **arrays)
    env = dict(os.environ, PLAIDX_AMX="0")
    subprocess.run([sys.executable, "-c", _AMX_OFF, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], env=env,
                   check=True, timeout=120)
    got = np.load(tmp_path / "out.npz")
    for key, (s, d) in want.items():
        np.testing.assert_array_equal(got["s" + key], s)
        np.testing.assert_array_equal(got["d" + key], d)
    for tag, k in kept_want.items():
        np.testing.assert_array_equal(got["k" + tag], k)


def test_wide_vectors_score_by_lookups_and_int8_says_what_to_do(tmp_path):
    """d 1032 (past the int8 kernels' 1024, and 258 packed bytes: the table's entries narrow so that their sums
    stay in int16): the default lookup stage scores it within the table's rounding of float32; exact_scores="int8"
    is a clear error naming the alternatives."""
    rng = np.random.default_rng(5)
    docs = [rng.standard_normal((int(rng.integers(3, 9)), 1032)).astype(np.float32) for _ in range(60)]
    docs = [d / np.linalg.norm(d, axis=1, keepdims=True) for d in docs]
    index = plaidx.Index.build(tmp_path / "wide", docs, nbits=2, nlist=8)
    q = docs[7][:4] + 0.01
    got = index.search(q, k=5)
    f32 = index.search(q, k=5, params=plaidx.SearchParams(exact_scores="float32"))
    assert got[1][0, 0] == f32[1][0, 0] == index.ids[7]
    np.testing.assert_allclose(got[0], f32[0], atol=0.01 * 4)
    with pytest.raises(ValueError, match="exact_scores='int8' needs d <= 1024.*leave it None"):
        index.search(q, k=5, params=plaidx.SearchParams(exact_scores="int8"))
