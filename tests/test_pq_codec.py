"""The pq residual codec (format 5): training and coding, every kernel's decode of it, and the index around it."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest
from synth import clustered_collection, exact_topk
from test_kernels import (
    _core,
    _unit,
    assert_topk_equivalent,
    make_collection,
    make_queries,
    native,
    run_capped,
    run_exact,
    run_search,
)

import plaidx
from plaidx.engine import codec, storage
from plaidx.engine import reference as ref
from plaidx.errors import IndexFormatError

BACKENDS = [pytest.param(ref, id="reference"), pytest.param(_core, id="native", marks=native)]


def pq_collection(seed: int, nbits: int, d: int = 64, levels: bool = True, **kw) -> dict:
    """make_collection with a random pq codebook (table and levels rounded as the codec rounds them)."""
    col = make_collection(seed, nbits=nbits, d=d, **kw)
    rng = np.random.default_rng(seed + 1)
    dpb = 8 // nbits
    table = codec.round_significand((rng.standard_normal((d // dpb, 256, dpb)) * 0.05).astype(np.float32))
    lv = codec.round_significand(np.sort(rng.uniform(0.6, 1.6, 16)).astype(np.float32)) if levels else None
    col["weights"] = (table, lv)
    return col


def pq_decode(col: dict, normalize: bool = False) -> np.ndarray:
    """The format's definition: centroid + level(high nibble of the last byte) * the codeword of every byte."""
    table, lv = col["weights"]
    packed = col["packed"]
    pb = packed.shape[1]
    s = lv[packed[:, -1] >> 4] if lv is not None else np.ones(packed.shape[0], np.float32)
    words = table[np.arange(pb), packed.astype(np.intp)].reshape(packed.shape[0], -1)
    v = col["centroids"][col["codes"].astype(np.intp)] + s[:, None] * words
    return _unit(v) if normalize else v.astype(np.float32)


# ------------------------------------------------------------------------------------------ the codec
def test_round_significand_keeps_12_bits_and_products_are_exact():
    x = np.random.default_rng(0).standard_normal(10_000).astype(np.float32) * 3
    r = codec.round_significand(x)
    assert np.all((r.view(np.uint32) & 0xFFF) == 0)
    assert np.all(np.abs(r - x) <= np.abs(x) * 2.0 ** -12)
    np.testing.assert_array_equal(codec.round_significand(r), r)  # idempotent
    a, b = r[:5000], r[5000:]
    np.testing.assert_array_equal((a.astype(np.float64) * b).astype(np.float32), a * b)  # exact in float32


@pytest.mark.parametrize("nbits", [1, 2, 4])
def test_train_and_compress_fill_the_bytes_as_documented(nbits):
    rng = np.random.default_rng(nbits)
    d = 64
    r = (rng.standard_normal((6000, d)) * rng.uniform(0.02, 0.1, (6000, 1))).astype(np.float32)
    table, lv = codec.train_pq(r[:4000], nbits, seed=0)
    dpb = 8 // nbits
    assert table.shape == (d // dpb, 256, dpb) and table.dtype == np.float32 and lv.shape == (16,)
    np.testing.assert_array_equal(codec.round_significand(table), table)
    np.testing.assert_array_equal(codec.round_significand(lv), lv)
    assert np.all(np.diff(lv) > 0)
    # the last byte's codeword depends on its low nibble only
    np.testing.assert_array_equal(table[-1], table[-1][np.arange(256) & 15])
    packed = codec.pq_compress(r[4000:], table, lv)
    assert packed.shape == (2000, d // dpb) and packed.dtype == np.uint8
    # each token's level is the one nearest its least-squares scale
    low = packed.copy()
    low[:, -1] &= 15
    words = table[np.arange(d // dpb), low.astype(np.intp)].reshape(2000, d)
    s = np.einsum("nd,nd->n", r[4000:], words) / np.einsum("nd,nd->n", words, words)
    level = packed[:, -1] >> 4
    assert np.all(np.abs(lv[level] - s) <= np.abs(lv[:, None] - s[None]).min(axis=0) + 1e-6)
    # every byte's codeword is the nearest one of its sub-vector (the first byte checked exhaustively)
    sub = r[4000:, :dpb]
    best = np.argmin(((sub[:, None, :] - table[0][None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(((sub - table[0][packed[:, 0]]) ** 2).sum(-1), ((sub - table[0][best]) ** 2).sum(-1),
                               rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("nbits,d", [(1, 64), (2, 64), (2, 136), (4, 72)])
def test_pq_encode_is_the_contracts_nearest_codeword_and_level_everywhere(nbits, d):
    """kernels.pq_encode (native and reference): each byte the nearest codeword of its sub-vector (ties to the
    last bit may go either way between a fused and an unfused copy), the last byte's low nibble among its 16,
    the high nibble the level nearest the least-squares scale; NaN rows take codeword 0."""
    rng = np.random.default_rng(nbits * 100 + d)
    dpb, pb = 8 // nbits, d * nbits // 8
    table = codec.round_significand((rng.standard_normal((pb, 256, dpb)) * 0.05).astype(np.float32))
    table[-1] = table[-1][np.arange(256) & 15]
    lv = codec.round_significand(np.sort(rng.uniform(0.5, 1.8, 16)).astype(np.float32))
    r = (rng.standard_normal((500, d)) * 0.05 * rng.uniform(0.5, 1.8, (500, 1))).astype(np.float32)
    r[7] = np.nan
    r[8] = table[np.arange(pb), rng.integers(0, 16, pb)].reshape(d)  # exactly on codewords: distance 0
    outs = [ref.pq_encode(r, table, lv, nbits)] + ([_core.pq_encode(r, table, lv, nbits)] if _core else [])
    sub = r.reshape(500, pb, dpb)
    dist = ((sub[:, :, None, :] - table[None]) ** 2).sum(-1)  # (n, pb, 256)
    dist[:, -1, 16:] = np.inf
    for packed in outs:
        assert packed.shape == (500, pb) and packed.dtype == np.uint8
        codes = packed.astype(np.intp)
        codes[:, -1] &= 15
        got = np.take_along_axis(dist, codes[:, :, None], axis=2)[..., 0]
        ok = np.isfinite(r).all(axis=1)
        np.testing.assert_allclose(got[ok], dist[ok].min(axis=2), rtol=1e-5, atol=1e-9)
        assert (packed[7] & np.r_[np.full(pb - 1, 255), 15]).max() == 0
        words = np.take_along_axis(table[None], codes[:, :, None, None], axis=2)[:, :, 0].reshape(500, d)
        s = np.einsum("nd,nd->n", r.astype(np.float64), words) / np.einsum("nd,nd->n", words.astype(np.float64),
                                                                            words)
        mids = (lv[1:].astype(np.float64) + lv[:-1]) / 2
        level = packed[:, -1] >> 4
        want = (mids[None] < s[:, None]).sum(1)
        near = np.abs(s[:, None] - mids[None]).min(1) < 1e-9
        assert np.all((level == want) | near | ~ok)
    if len(outs) == 2:  # native and reference agree but for ties to the last bit
        differ = outs[0] != outs[1]
        assert differ.mean() < 0.002


@pytest.mark.parametrize("mod", BACKENDS)
def test_pq_encode_bad_input_is_a_clear_error(mod):
    r = np.zeros((3, 64), np.float32)
    table = np.zeros((16, 256, 4), np.float32)
    lv = np.linspace(0.5, 1.5, 16).astype(np.float32)
    with pytest.raises(ValueError, match="nbits must be 1, 2 or 4"):
        mod.pq_encode(r, table, lv, 8)
    with pytest.raises(ValueError, match="ascending"):
        mod.pq_encode(r, table, lv[::-1].copy(), 2)
    with pytest.raises(ValueError, match="pq table must have shape"):
        mod.pq_encode(r, table, lv, 4)
    with pytest.raises(ValueError, match="levels must"):
        mod.pq_encode(r, table, None, 2)


def test_pq_codes_residuals_closer_than_the_scalar_codec_at_the_same_bytes():
    rng = np.random.default_rng(3)
    basis = rng.standard_normal((12, 64))
    r = ((rng.standard_normal((12_000, 12)) @ basis) * 0.02 * rng.uniform(0.5, 2, (12_000, 1))
         + rng.standard_normal((12_000, 64)) * 0.02).astype(np.float32)
    train, test = r[:8000], r[8000:]
    cutoffs, weights = codec.train_codebooks(train, 2)
    table, lv = codec.train_pq(train, 2)
    zero = np.zeros((1, 64), np.float32)
    codes = np.zeros(test.shape[0], np.uint16)
    scalar = ref.decompress(codes, ref.compress(test, cutoffs, 2), zero, weights, 2, False)
    pq = ref.decompress(codes, codec.pq_compress(test, table, lv), zero, (table, lv), 2, False)
    err_s, err_p = np.mean((scalar - test) ** 2), np.mean((pq - test) ** 2)
    assert err_p < 0.85 * err_s, (err_p, err_s)


def test_bad_residual_codec_arguments_are_clear_errors(tmp_path):
    docs = [np.ones((3, 16), np.float32)]
    with pytest.raises(ValueError, match="residual_codec must be None or one of"):
        plaidx.Index.build(tmp_path / "a", docs, residual_codec="opq")
    with pytest.raises(ValueError, match="nbits in"):
        plaidx.Index.build(tmp_path / "b", docs, nbits=8, residual_codec="pq")
    with pytest.raises(ValueError, match="builds on the CPU"):
        plaidx.Index.build(tmp_path / "c", docs, residual_codec="pq", device="cuda")
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


# ------------------------------------------------------------------------------------------ kernels
@pytest.mark.parametrize("mod", BACKENDS)
@pytest.mark.parametrize("levels", [True, False])
@pytest.mark.parametrize("nbits,d", [(1, 64), (2, 64), (2, 136), (4, 72)])
def test_decompress_is_the_formats_definition_bit_for_bit(mod, nbits, d, levels):
    col = pq_collection(5 + nbits, nbits, d=d, levels=levels, ndocs=40)
    got = mod.decompress(col["codes"], col["packed"], col["centroids"], col["weights"], nbits, False)
    np.testing.assert_array_equal(got, pq_decode(col))
    unit = mod.decompress(col["codes"], col["packed"], col["centroids"], col["weights"], nbits, True)
    np.testing.assert_allclose(unit, pq_decode(col, True), rtol=1e-5, atol=1e-6)


@native
@pytest.mark.parametrize("nbits,d", [(1, 64), (2, 64), (2, 136), (4, 72)])
@pytest.mark.parametrize("qlen", [1, 13, 32])
def test_search_over_pq_matches_the_reference(nbits, d, qlen):
    """Every step-5 flavour over a pq codebook: float and int8 exact scores, and the exhaustive search; the
    native kernels (the AVX-512 pq decoder at nbits 2 where this CPU has it) give the reference's results."""
    col = pq_collection(20 + nbits + qlen, nbits, d=d, ndocs=150, nlist=24, max_len=30)
    Q, S = make_queries(qlen, col, nq=3, qlen=qlen)
    cells = _core.quantize_rows(col["centroids"])
    for params in (dict(nprobe=2, threshold=0.0, ndocs=60, n_exact=20, k=8),
                   dict(nprobe=24, threshold=-1.0, ndocs=150, n_exact=150, k=10)):
        assert_topk_equivalent(run_search(_core, Q, S, col, **params), run_search(ref, Q, S, col, **params))
        want8 = run_search(ref, Q, S, col, exact_int8=True, **params)
        got8 = run_search(_core, Q, None, col, exact_int8=True, cell_codes=cells, **params)
        one8 = run_search(_core, Q, S, col, exact_int8=True, num_threads=1, **params)
        assert_topk_equivalent(one8, want8, tol=1e-5)
        if params["nprobe"] == 24:  # every cell probed: the candidates do not depend on the cell scores
            assert_topk_equivalent(got8, want8, tol=1e-5)
    assert_topk_equivalent(run_exact(_core, Q, col, k=9), run_exact(ref, Q, col, k=9))
    # the exhaustive search is MaxSim over the definition's decoded tokens
    unit = pq_decode(col, True)
    full = ref.maxsim(Q, unit, col["doc_offsets"])
    s, i = run_exact(_core, Q, col, k=9)
    np.testing.assert_allclose(s, np.take_along_axis(full, i, axis=1), rtol=1e-5, atol=1e-5)


_CAPPED = r"""
import sys, numpy as np
from plaidx import _core
a = np.load(sys.argv[1])
w = (a["table"], a["levels"])
col = (a["codes"], a["packed"], a["doc_offsets"])
out = {"dispatch": np.array(_core.build_info()["simd_dispatch"])}
out["dec"] = _core.decompress(a["codes"], a["packed"], a["centroids"], w, 2, False)
out["es"], out["ed"] = _core.exact_search(a["Q"], *col, a["centroids"], w, 2, np.zeros(0, np.uint8), 7)
out["xs"], out["xd"] = _core.search(a["Q"], a["S"], *col, a["ivf"], a["ivf_offsets"], a["centroids"], w, 2,
                                    np.zeros(0, np.uint8), 30, -1.0, 200, 200, 7, exact_int8=True)
np.savez(sys.argv[2], **out)
"""


@native
@pytest.mark.parametrize("level", ["baseline", "avx2"])
def test_every_simd_copy_decodes_pq_like_the_reference(level, tmp_path):
    col = pq_collection(61, 2, d=136, ndocs=120, nlist=30, max_len=25)
    Q, S = make_queries(61, col, nq=3, qlen=9)
    arrays = {k: v for k, v in col.items() if isinstance(v, np.ndarray)}
    got = run_capped(_CAPPED, level, tmp_path, Q=Q, S=S, table=col["weights"][0], levels=col["weights"][1], **arrays)
    np.testing.assert_array_equal(got["dec"], pq_decode(col))
    assert_topk_equivalent((got["es"], got["ed"]), run_exact(ref, Q, col, k=7))
    want = run_search(ref, Q, S, col, nprobe=30, threshold=-1.0, ndocs=200, n_exact=200, k=7, exact_int8=True)
    assert_topk_equivalent((got["xs"], got["xd"]), want, tol=1e-5)


@pytest.mark.parametrize("mod", BACKENDS)
def test_bad_pq_codebooks_are_clear_errors(mod):
    col = pq_collection(9, 2, d=64, ndocs=10)
    table, lv = col["weights"]
    args = (col["codes"], col["packed"], col["centroids"])
    with pytest.raises(ValueError, match="pq table must have shape"):
        mod.decompress(*args, (np.ascontiguousarray(table[:, :128]), lv), 2, False)
    with pytest.raises(ValueError, match="pq table must have shape"):  # a 2-bit table given as 4-bit
        mod.decompress(col["codes"], np.zeros((col["codes"].size, 32), np.uint8), col["centroids"], (table, lv), 4,
                       False)
    with pytest.raises(ValueError, match=r"levels must have shape \(16,\)"):
        mod.decompress(*args, (table, lv[:8]), 2, False)
    with pytest.raises(ValueError, match="pair"):
        mod.decompress(*args, (table,), 2, False)


# ------------------------------------------------------------------------------------------ the index
@pytest.fixture(scope="module")
def data():
    docs, queries, _ = clustered_collection(n_docs=300, dim=64, mean_len=24, n_queries=16, seed=11)
    return {"docs": docs, "queries": queries}


def _recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(ids, truth)]))


def test_a_pq_index_is_format_5_and_searches_like_its_decoded_tokens(data, tmp_path):
    docs, queries = data["docs"], data["queries"]
    ix = plaidx.Index.build(tmp_path / "pq", docs, nlist=64, residual_codec="pq")
    m = json.loads((tmp_path / "pq" / storage.MANIFEST).read_text())
    assert m["format_version"] == storage.PQ_FORMAT_VERSION == 5 and m["build"]["residual_codec"] == "pq"
    assert ix.residual_codec == "pq" and ix.info()["residual_codec"] == "pq" and ix.verify() == []
    sc = plaidx.Index.build(tmp_path / "sc", docs, nlist=64)
    assert sc.residual_codec == "scalar" and json.loads((tmp_path / "sc" / storage.MANIFEST).read_text())[
        "format_version"] == 3
    # the same bytes per token as the scalar codec's residuals
    assert ix._snap.a["residuals"].shape == sc._snap.a["residuals"].shape
    # reconstruct is the definition's decode of the stored bytes
    snap = ix._snap
    lo, hi = int(snap.a["doc_offsets"][3]), int(snap.a["doc_offsets"][4])
    want = pq_decode({"weights": (snap.codec.pq_table, snap.codec.pq_levels), "packed": snap.a["residuals"][lo:hi],
                      "centroids": snap.codec.centroids, "codes": snap.a["codes"][lo:hi]}, True)
    np.testing.assert_allclose(ix.reconstruct(3), want, rtol=1e-5, atol=1e-6)
    # exact=True is MaxSim over the decoded tokens; the default search finds most of it
    _, truth = exact_topk(queries, docs, 10)
    se, ie = ix.search(queries, 10, exact=True)
    _, i = ix.search(queries, 10)
    assert _recall(ie, truth) >= 0.75 and _recall(i, truth) >= 0.75
    all_dec = np.concatenate([ix.reconstruct(j) for j in range(len(docs))])
    offs = np.asarray(snap.a["doc_offsets"])
    full = ref.maxsim(np.ascontiguousarray(queries, dtype=np.float32), all_dec, offs)
    np.testing.assert_allclose(se, -np.sort(-full, axis=1)[:, :10], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(full, ie, axis=1), se, rtol=1e-5, atol=1e-5)


def test_updates_keep_the_pq_codec(data, tmp_path):
    docs, queries = data["docs"], data["queries"]
    ix = plaidx.Index.build(tmp_path / "pq", docs[:200], nlist=64, residual_codec="pq")
    table = ix._snap.codec.pq_table.copy()
    new = ix.add(docs[200:])
    # added documents are coded with the same table, as a fresh encode of them would be
    snap = ix._snap
    lo = int(snap.a["doc_offsets"][200])
    emb = np.concatenate(docs[200:]).astype(np.float32)
    packed, _ = snap.codec.compress(emb, np.asarray(snap.a["codes"][lo:]))
    np.testing.assert_array_equal(np.asarray(snap.a["residuals"][lo:]), packed)
    np.testing.assert_array_equal(snap.codec.pq_table, table)
    ix.delete(new[:10].tolist() + [0, 1])
    ix.compact()
    assert ix.residual_codec == "pq" and ix.verify() == []
    assert json.loads((tmp_path / "pq" / storage.MANIFEST).read_text())["format_version"] == 5
    ix.recluster(nlist=32)
    assert ix.residual_codec == "pq" and ix.nlist == 32 and ix.verify() == []
    _, i = ix.search(queries, 5)
    assert not np.isin(i, [0, 1, *new[:10].tolist()]).any()
    # a codec source keeps its codec: shards of one pq collection
    shard = plaidx.Index.build(tmp_path / "shard", docs[:50], codec_from=ix)
    assert shard.residual_codec == "pq"
    np.testing.assert_array_equal(shard._snap.codec.pq_table, ix._snap.codec.pq_table)
    with pytest.raises(ValueError, match="builds on the CPU"):
        plaidx.Index.build(tmp_path / "gpu", docs[:50], codec_from=ix, device="cuda")


def test_older_plaidx_refuses_a_pq_index_and_damage_is_reported(data, tmp_path, monkeypatch):
    docs = data["docs"][:80]
    path = tmp_path / "pq"
    plaidx.Index.build(path, docs, nlist=16, residual_codec="pq")
    with monkeypatch.context() as mp:
        mp.setattr(storage, "NEWEST_FORMAT_VERSION", 4)  # what plaidx read before the pq codec
        with pytest.raises(IndexFormatError, match="newer than this plaidx supports"):
            plaidx.Index.open(path)
    m = json.loads((path / storage.MANIFEST).read_text())
    m["format_version"] = 3  # a pq table in a format 3 index
    (path / storage.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="pq_table"):
        plaidx.Index.open(path, verify="none")
    m["format_version"] = 5
    (path / storage.MANIFEST).write_text(json.dumps(m))
    # a table value that is not rounded as the codec writes it (the CRC fixed up: a foreign writer)
    entry = m["arrays"]["pq_table"]
    f = path / entry["file"]
    arr = np.load(f)
    arr[0, 0, 0] = np.float32(0.1)  # 0.1 has 24 significant bits
    np.save(f, arr)
    entry["crc32"] = zlib.crc32(f.read_bytes())
    (path / storage.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="12 significant bits"):
        plaidx.Index.open(path)



def test_sharded_builds_and_reshards_keep_the_pq_codec(data, tmp_path):
    from plaidx.distributed import ShardedIndex, build, reshard
    from plaidx.distributed.manifest import codec_hash

    docs, queries = data["docs"], data["queries"]
    sh = build(tmp_path / "sharded", docs, 3, nlist=32, residual_codec="pq")
    assert sh.verify() == [] and all(s.residual_codec == "pq" for s in sh._state[1])
    _, truth = exact_topk(queries, docs, 10)
    assert _recall(sh.search(queries, 10, exact=True)[1], truth) >= 0.75
    # a pq index resharded: every shard holds its table and levels, and searches as the source does
    src = plaidx.Index.build(tmp_path / "one", docs, nlist=32, residual_codec="pq")
    re = ShardedIndex.open(reshard(tmp_path / "one", tmp_path / "re", 2))
    assert all(s.residual_codec == "pq" for s in re._state[1]) and re.verify() == []
    s1, i1 = re.search(queries, 10, exact=True)
    s2, i2 = src.search(queries, 10, exact=True)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    # the codec hash covers the pq arrays: the same centroids with another table hash differently
    other = plaidx.Index.build(tmp_path / "other", docs, nlist=32, residual_codec="pq", seed=0)
    scalar = plaidx.Index.build(tmp_path / "scalar", docs, nlist=32, seed=0)
    np.testing.assert_array_equal(other._snap.codec.centroids, scalar._snap.codec.centroids)
    assert codec_hash(tmp_path / "other") != codec_hash(tmp_path / "scalar")
    with pytest.raises(ValueError, match="nbits in"):
        build(tmp_path / "bad", docs, 2, nbits=8, residual_codec="pq")


def test_the_default_codec_is_pq_where_its_table_is_small_and_the_build_is_on_the_cpu(data, tmp_path, monkeypatch):
    rule = codec.default_residual_codec
    assert rule(2, 204_800) == "pq" and rule(2, 204_799) == "scalar"
    assert rule(1, 409_600) == "pq" and rule(1, 409_599) == "scalar"
    assert rule(4, 10**9) == rule(8, 10**9) == rule(2, 10**9, gpu_build=True) == "scalar"
    docs = data["docs"]
    n_tokens = sum(len(d) for d in docs)
    assert plaidx.Index.build(tmp_path / "small", docs, nlist=32).residual_codec == "scalar"  # below the line
    monkeypatch.setattr(codec, "PQ_MIN_TOKEN_BITS", 2 * n_tokens)  # as if the collection were large
    ix = plaidx.Index.build(tmp_path / "large", docs, nlist=32)
    assert ix.residual_codec == "pq" and ix.info()["format_version"] == 5
    assert plaidx.Index.build(tmp_path / "nb4", docs, nlist=32, nbits=4).residual_codec == "scalar"
    assert plaidx.Index.build(tmp_path / "asked", docs, nlist=32, residual_codec="scalar").residual_codec == "scalar"
    ix.recluster(nlist=16)  # a recluster keeps the codec the index has
    assert ix.residual_codec == "pq"
    monkeypatch.setattr(codec, "PQ_MIN_TOKEN_BITS", 10**12)
    assert plaidx.Index.open(tmp_path / "large").recluster(nlist=16).residual_codec == "pq"
    from plaidx.distributed import build

    monkeypatch.setattr(codec, "PQ_MIN_TOKEN_BITS", 2 * n_tokens)  # the whole collection decides, not the sample
    sh = build(tmp_path / "sharded", docs, 2, nlist=32)
    assert all(s.residual_codec == "pq" for s in sh._state[1])


def test_a_residual_codec_that_conflicts_with_codec_from_is_a_clear_error(data, tmp_path):
    docs = data["docs"][:60]
    src = plaidx.Index.build(tmp_path / "src", docs, nlist=16, residual_codec="pq")
    with pytest.raises(ValueError, match="conflicts with codec_from's 'pq' codec"):
        plaidx.Index.build(tmp_path / "other", docs, codec_from=src, residual_codec="scalar")
    assert not (tmp_path / "other").exists()
    assert plaidx.Index.build(tmp_path / "same", docs, codec_from=src, residual_codec="pq").residual_codec == "pq"
    with pytest.raises(ValueError, match="builds on the CPU"):  # a torch-style device name counts too
        plaidx.Index.build(tmp_path / "gpu", docs, residual_codec="pq", device=" CUDA:0 ")
