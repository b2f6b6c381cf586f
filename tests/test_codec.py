"""Residual codec: codebook training and the compress/decompress round trip."""

from __future__ import annotations

import numpy as np
import pytest

from plaidx.engine.clustering import DEFAULT_MAX_NLIST, LARGE_MAX_NLIST, WIDE_NLIST_MIN_TOKENS, default_nlist
from plaidx.engine.codec import (
    ResidualCodec,
    centroid_arrays,
    dequantize_centroids,
    dequantize_centroids4,
    quantize_centroids,
    quantize_centroids4,
    stored_centroids,
    train_codebooks,
)


@pytest.mark.parametrize("dim", [64, 96, 128])
@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_round_trip_within_half_a_bucket(nbits, dim):
    rng = np.random.default_rng(nbits * 1000 + dim)
    scale = rng.uniform(0.02, 0.2, size=dim)  # every dimension its own spread (Matryoshka heads differ)
    train = (rng.standard_normal((4000, dim)) * scale).astype(np.float32)
    cutoffs, weights = train_codebooks(train, nbits)
    assert cutoffs.shape == (dim, (1 << nbits) - 1) and weights.shape == (dim, 1 << nbits)
    assert np.all(np.diff(weights, axis=1) >= 0) and np.all(np.diff(cutoffs, axis=1) >= 0)
    centroids = np.zeros((1, dim), np.float32)
    codec = ResidualCodec(centroids, cutoffs, weights, nbits)
    x = (rng.standard_normal((500, dim)) * scale).astype(np.float32)
    x = np.clip(x, weights[:, 0], weights[:, -1]).astype(np.float32)
    codes = np.zeros(len(x), np.uint16)
    packed, norms = codec.compress(x, codes)
    assert packed.shape == (len(x), dim * nbits // 8) and packed.dtype == np.uint8
    np.testing.assert_allclose(norms, np.linalg.norm(x, axis=1), rtol=1e-5)
    y = codec.decompress(codes, packed, normalize=False)
    err = np.abs(y - x)
    # the bucket of x is the gap between the two weights around it; the decoded value is the nearer one
    hi = np.stack([np.searchsorted(weights[j], x[:, j], side="left") for j in range(dim)], axis=1)
    hi = np.clip(hi, 1, (1 << nbits) - 1)
    gap = np.take_along_axis(weights.T, hi, axis=0) - np.take_along_axis(weights.T, hi - 1, axis=0)
    assert np.all(err <= gap / 2 + 1e-6)


def test_more_bits_less_error():
    rng = np.random.default_rng(0)
    train = (rng.standard_normal((5000, 64)) * 0.1).astype(np.float32)
    x = (rng.standard_normal((1000, 64)) * 0.1).astype(np.float32)
    errors = []
    for nbits in (1, 2, 4, 8):
        c, w = train_codebooks(train, nbits)
        codec = ResidualCodec(np.zeros((1, 64), np.float32), c, w, nbits)
        codes = np.zeros(len(x), np.uint16)
        y = codec.decompress(codes, codec.compress(x, codes)[0], normalize=False)
        errors.append(float(np.mean((y - x) ** 2)))
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 100


def test_lloyd_max_beats_plain_quantiles():
    """The trained weights reconstruct better than ColBERTv2's mid-quantile weights with the same bits."""
    rng = np.random.default_rng(1)
    train = (rng.standard_normal((8000, 32)) * 0.1).astype(np.float32)
    x = (rng.standard_normal((2000, 32)) * 0.1).astype(np.float32)
    c, w = train_codebooks(train, 2)
    q_w = np.quantile(train, (np.arange(4) + 0.5) / 4, axis=0).T.astype(np.float32)
    q_c = np.quantile(train, np.arange(1, 4) / 4, axis=0).T.astype(np.float32)
    codes = np.zeros(len(x), np.uint16)
    mse = []
    for cut, wt in ((c, w), (q_c, q_w)):
        codec = ResidualCodec(np.zeros((1, 32), np.float32), np.ascontiguousarray(cut), np.ascontiguousarray(wt), 2)
        mse.append(float(np.mean((codec.decompress(codes, codec.compress(x, codes)[0], normalize=False) - x) ** 2)))
    assert mse[0] < mse[1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="nbits"):
        train_codebooks(np.zeros((10, 8), np.float32), 3)
    with pytest.raises(ValueError, match="non-empty"):
        train_codebooks(np.zeros((0, 8), np.float32), 2)


@pytest.mark.parametrize("dim", [64, 96, 128])
def test_int8_centroids_are_close_exact_and_idempotent(dim):
    rng = np.random.default_rng(dim)
    c = rng.standard_normal((500, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    c[0] = 0.0  # a degenerate row stays representable
    c[1, :] = 0.0
    c[1, 3] = 1.0  # all weight on one dimension
    q, scales = quantize_centroids(c)
    assert q.dtype == np.int8 and q.shape == c.shape and scales.dtype == np.float32 and scales.shape == (500,)
    back = dequantize_centroids(q, scales)
    # error at most half a step per entry; the step is a power of two
    assert np.all(np.abs(back - c) <= scales[:, None] / 2)
    assert np.all(np.log2(scales) == np.round(np.log2(scales)))
    assert np.abs(q[2:]).max(axis=1).min() >= 64  # each row uses at least 7 bits of its range
    assert back[1, 3] == 1.0 and not back[0].any()
    sq_err = ((back[2:] - c[2:]) ** 2).sum(axis=1).mean()
    assert sq_err < 5e-4, sq_err
    # what was decoded encodes to the same bytes (a reused codec stores exactly what it was given)
    q2, s2 = quantize_centroids(back)
    assert np.array_equal(q2, q) and np.array_equal(s2, scales)
    with pytest.raises(ValueError, match="NaN"):
        quantize_centroids(np.full((2, dim), np.nan, np.float32))


@pytest.mark.parametrize("dim", [64, 96, 128])
def test_int4_centroids_are_close_exact_at_the_peak_and_idempotent(dim):
    rng = np.random.default_rng(dim + 1)
    c = rng.standard_normal((400, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    c[0] = 0.0  # a degenerate row stays representable
    c[1, :] = 0.0
    c[1, 5] = -1.0
    packed, scales = quantize_centroids4(c)
    assert packed.dtype == np.uint8 and packed.shape == (400, dim // 2) and scales.shape == (400,)
    back = dequantize_centroids4(packed, scales)
    assert back.shape == c.shape and back.dtype == np.float32
    assert np.all(np.abs(back - c) <= scales[:, None] / 2 * (1 + 1e-6))
    peak = np.abs(c).argmax(axis=1)
    rows = np.arange(len(c))
    np.testing.assert_allclose(back[rows, peak], c[rows, peak], rtol=1e-6)  # the largest entry is kept
    assert back[1, 5] == -1.0 and not back[0].any() and not back[1, :5].any()
    # low nibble = even dimension, high nibble = odd dimension, each q + 8
    q = np.clip(np.rint(c[2] / scales[2]), -7, 7).astype(np.int64) + 8
    assert np.array_equal(packed[2], (q[0::2] | (q[1::2] << 4)).astype(np.uint8))
    # what was decoded encodes to the same bytes (a reused codec stores exactly what it was given)
    p2, s2 = quantize_centroids4(back)
    assert np.array_equal(p2, packed) and np.array_equal(s2, scales)
    # stored_centroids reads each stored form back; nbits <= 2 stores 4-bit rows, 4 and 8 float16
    assert np.array_equal(stored_centroids(centroid_arrays(c, 2)), back)
    assert centroid_arrays(c, 4)["centroids"].dtype == np.float16
    # below 2**18 tokens an nbits 1-2 index keeps int8 rows (no doubled nlist to pay for)
    small = centroid_arrays(c, 2, n_tokens=1000)
    assert small["centroids"].dtype == np.int8 and np.array_equal(small["centroids"], quantize_centroids(c)[0])
    assert centroid_arrays(c, 1, n_tokens=1 << 18)["centroids"].dtype == np.uint8
    q8, s8 = quantize_centroids(c)
    assert np.array_equal(stored_centroids({"centroids": q8, "centroid_scales": s8}), dequantize_centroids(q8, s8))
    with pytest.raises(ValueError, match="NaN"):
        quantize_centroids4(np.full((2, dim), np.nan, np.float32))
    with pytest.raises(ValueError, match="even d"):
        quantize_centroids4(np.zeros((2, 7), np.float32))


def test_default_nlist_doubles_at_two_bits_where_the_4bit_table_pays_for_it():
    """nbits <= 2 from 2**18 tokens: 32 * sqrt(n) centroids in the bytes 16 * sqrt(n) int8 rows took."""
    assert default_nlist(1_000_000, 2) == 16384 and default_nlist(1_000_000, 1) == 16384
    assert default_nlist(1_000_000, 4) == 8192 and default_nlist(1_000_000, 8) == 8192
    assert default_nlist(WIDE_NLIST_MIN_TOKENS - 1, 2) == default_nlist(WIDE_NLIST_MIN_TOKENS - 1, 4) == 4096
    assert default_nlist(WIDE_NLIST_MIN_TOKENS, 2) == 16384
    assert default_nlist(12_000, 2) == 1024  # small collections keep PLAID's rule
    assert default_nlist(2_000_000, 2) == DEFAULT_MAX_NLIST and default_nlist(40, 2) == 16 and default_nlist(10, 2) == 10
    # the 4-bit table of twice the centroids costs no more than the int8 table of format 2
    rng = np.random.default_rng(0)
    n = 1_000_000
    wide = centroid_arrays(rng.standard_normal((default_nlist(n, 2), 128)).astype(np.float32), 2)
    int8_rows, scales = quantize_centroids(rng.standard_normal((default_nlist(n, 4), 128)).astype(np.float32))
    assert sum(a.nbytes for a in wide.values()) <= int8_rows.nbytes + scales.nbytes + 4 * default_nlist(n, 2)
    with pytest.raises(ValueError, match="empty"):
        default_nlist(0, 2)


def test_default_nlist_follows_the_tokens_past_the_square_root_ceiling():
    """From 2**21 tokens about 64 tokens a centroid (power of two, rounded down), up to 2**18; a GPU
    build's cap (65536, its uint16 kernels) bounds it the same way."""
    assert default_nlist(2**21 - 1, 2) == DEFAULT_MAX_NLIST
    assert default_nlist(2**21, 2) == 2**15 and default_nlist(2**21, 4) == 2**15
    assert default_nlist(10_000_000, 2) == 131072
    assert default_nlist(32_000_000, 2) == default_nlist(10**9, 2) == LARGE_MAX_NLIST
    assert default_nlist(10_000_000, 2, 65536) == 65536 and default_nlist(1_000_000, 2, 65536) == 16384
    for n in (3_000_000, 10_000_000, 20_000_000):
        assert n // default_nlist(n, 2) >= 64 and n // default_nlist(n, 2) < 128
