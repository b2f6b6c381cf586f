"""The build's grouped nearest-centroid assignment: native kernel against the reference and brute force,
every SIMD copy, layout checks, and the k-means steps above the default nlist that use it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from plaidx.engine import clustering, codec, kernels
from plaidx.engine import reference as ref

try:
    from plaidx import _core
except ImportError:  # pragma: no cover - depends on the build
    _core = None

native = pytest.mark.skipif(_core is None, reason="plaidx._core is not built (python setup.py build_ext --inplace)")
BACKENDS = [pytest.param(ref, id="reference"), pytest.param(_core, id="native", marks=native)]


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _clustered(seed: int, n: int, nlist: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens around nlist unit centroids (noisy copies), as a build would see them."""
    rng = np.random.default_rng(seed)
    cents = _unit(rng.standard_normal((nlist, d)))
    x = _unit(cents[rng.integers(0, nlist, n)] + 0.3 * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d))
    return cents, x


def _score_of(x: np.ndarray, cents: np.ndarray, codes: np.ndarray) -> np.ndarray:
    return np.einsum("nd,nd->n", x.astype(np.float64), cents[codes.astype(np.int64)].astype(np.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_group_is_the_exact_nearest_centroid(backend):
    cents, x = _clustered(0, 3000, 300, 64)
    a = clustering.Assigner(cents, grouped_threshold=1)  # grouped even at 300 centroids
    coarse_t, _, panels, pcol, ids, _ = a._grouped
    # one group holding every centroid, probed by every token
    all_t = np.zeros((64, 8), np.float32)
    all_t[:, 0] = 1.0
    n_cols = (300 + 7) // 8 * 8
    block = np.zeros((n_cols, 64), np.float32)
    block[:300] = cents
    one_ids = np.full(n_cols, 0xFFFFFFFF, np.uint32)
    one_ids[:300] = np.arange(300)
    codes = backend.assign_nearest(x, all_t, 1, np.ascontiguousarray(block.T).ravel(), np.array([0, n_cols]),
                                   one_ids, 1)
    brute = np.argmax(x.astype(np.float64) @ cents.T.astype(np.float64), axis=1)
    exact = codes == brute
    # a miss is only a near-tie the float32 sums resolve the other way
    assert exact.mean() > 0.999
    np.testing.assert_allclose(_score_of(x, cents, codes)[~exact], _score_of(x, cents, brute)[~exact], atol=1e-5)


@native
def test_native_matches_reference_and_is_near_exact():
    cents, x = _clustered(1, 20000, 5000, 128)
    a = clustering.Assigner(cents)
    assert a.index is None  # 5000 >= GROUPED_MIN_NLIST: the grouped kernel
    got = a.assign(x)
    want = ref.assign_nearest(x, *a._grouped)
    same = got == want
    assert same.mean() > 0.999
    np.testing.assert_allclose(_score_of(x, cents, got)[~same], _score_of(x, cents, want)[~same], atol=1e-5)
    brute = np.argmax(x @ cents.T, axis=1)
    assert (got == brute).mean() > 0.95  # the exact nearest for most tokens
    # a miss costs little on average (isotropic centroids have no group structure, so a few misses are far)
    assert np.mean(_score_of(x, cents, brute) - _score_of(x, cents, got)) < 0.01
    # thread count and batch split do not change the codes
    np.testing.assert_array_equal(_core.assign_nearest(x, *a._grouped, num_threads=1), got)
    np.testing.assert_array_equal(np.concatenate([a.assign(x[:777]), a.assign(x[777:])]), got)


def test_codes_take_the_index_width():
    cents, x = _clustered(2, 500, 4096, 32)
    codes = clustering.Assigner(cents).assign(x)
    assert codes.dtype == np.uint16
    assert clustering.Assigner(cents[:100]).assign(x).dtype == np.uint16
    assert clustering.Assigner(cents).assign(x[:0]).shape == (0,)


_COPY = """
import sys, numpy as np
from plaidx import _core
from plaidx.engine import clustering, codec, kernels
z = np.load(sys.argv[1])
a = clustering.Assigner(z["cents"])
np.save(sys.argv[2], _core.assign_nearest(z["x"], *a._grouped))
odd = [z[k] for k in ("coarse_t", "G", "panels", "pcol", "ids")]
np.save(sys.argv[3], np.stack([_core.assign_nearest(z["odd_x"], odd[0], int(odd[1]), *odd[2:], p) for p in (1, 3, 40)]))
"""


@native
@pytest.mark.parametrize("level", ["baseline", "avx2"])
def test_every_simd_copy_gives_the_same_codes(level, tmp_path):
    # PLAIDX_SIMD caps the dispatch, so the copies this CPU would not pick are run too; group widths that
    # are not a multiple of 16 exercise the 8-lane tails
    cents, x = _clustered(3, 5000, 4500, 96)
    odd_x, _, (coarse_t, G, panels, pcol, ids) = _odd_layout(7)
    np.savez(tmp_path / "in.npz", cents=cents, x=x, odd_x=odd_x, coarse_t=coarse_t, G=G, panels=panels, pcol=pcol,
             ids=ids)
    root = str(Path(ref.__file__).resolve().parents[2])
    env = dict(os.environ, PLAIDX_SIMD=level, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", _COPY, str(tmp_path / "in.npz"), str(tmp_path / "out.npy"),
                    str(tmp_path / "odd.npy")], env=env, check=True, cwd=tmp_path, timeout=120)
    # ties, padding anywhere and ids in no order: exactly the reference's choice
    odd = np.load(tmp_path / "odd.npy")
    for row, p in zip(odd, (1, 3, 40)):
        np.testing.assert_array_equal(row, ref.assign_nearest(odd_x, coarse_t, G, panels, pcol, ids, p))
    got = np.load(tmp_path / "out.npy")
    a = clustering.Assigner(cents)
    here = a.assign(x)
    same = got == here  # fused and unfused multiply-adds may split a near-tie
    assert same.mean() > 0.999
    np.testing.assert_allclose(_score_of(x, cents, got)[~same], _score_of(x, cents, here)[~same], atol=1e-5)


def _odd_layout(seed: int) -> tuple:
    """A hand-made grouping the build never produces: padding columns between real ones, ids in no order
    within a group, duplicated centroids (exact ties within and across groups) and 40 groups, so that the
    probe list's block test runs; tokens that are centroids (ties) or their negatives (every real score
    below a padding column's 0)."""
    rng = np.random.default_rng(seed)
    d, G = 24, 40
    cents = _unit(rng.standard_normal((300, d)))
    cents[150:180] = cents[0:30]  # the same vector under two ids
    group = rng.integers(0, G, 300)
    group[:G] = np.arange(G)  # every group holds a centroid
    group[150:165] = group[0:15]  # some duplicates share a group, the rest do not
    cols, ids_l, pcol = [], [], [0]
    for g in range(G):
        lay = list(np.flatnonzero(group == g)) + [None] * int(rng.integers(1, 12))
        rng.shuffle(lay)  # padding anywhere, ids in no order
        lay += [None] * (-len(lay) % 8)
        for c in lay:
            cols.append(np.zeros(d, np.float32) if c is None else cents[c])
            ids_l.append(0xFFFFFFFF if c is None else c)
        pcol.append(len(ids_l))
    panels = np.concatenate([np.ascontiguousarray(np.stack(cols[a:b]).T).ravel()
                             for a, b in zip(pcol[:-1], pcol[1:])])
    centres = np.stack([_unit(cents[group == g].sum(axis=0)) for g in range(G)])
    coarse_t = np.zeros((d, G), np.float32)
    coarse_t[:, :G] = centres.T
    x = np.concatenate([cents[:60], -cents[60:90], _unit(rng.standard_normal((500, d)))]).astype(np.float32)
    return x, cents, (coarse_t, G, panels.astype(np.float32), np.array(pcol, np.int64), np.array(ids_l, np.uint32))


@pytest.mark.parametrize("nprobe", [1, 3, 40])
def test_ties_padding_and_order_match_the_reference(nprobe):
    x, cents, layout = _odd_layout(6)
    want = ref.assign_nearest(x, *layout, nprobe)
    assert (want < 300).all()  # a padding column never wins, not even over negative scores
    if nprobe == 40:  # every group probed: the exact nearest; of two equal centroids, the lower id
        np.testing.assert_array_equal(want[:30], np.arange(30))
        brute = np.max(x.astype(np.float64) @ cents.T.astype(np.float64), axis=1)
        np.testing.assert_allclose(_score_of(x, cents, want), brute, atol=1e-5)
    if _core is not None:
        np.testing.assert_array_equal(_core.assign_nearest(x, *layout, nprobe), want)
        np.testing.assert_array_equal(_core.assign_nearest(x, *layout, nprobe, num_threads=1), want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layout_errors_name_the_fix(backend):
    cents, x = _clustered(4, 100, 4096, 32)
    coarse_t, G, panels, pcol, ids, nprobe = clustering.Assigner(cents)._grouped
    with pytest.raises(ValueError, match="nprobe"):
        backend.assign_nearest(x, coarse_t, G, panels, pcol, ids, G + 1)
    with pytest.raises(ValueError, match="pcol"):
        backend.assign_nearest(x, coarse_t, G, panels, pcol[:-1].copy(), ids, nprobe)
    with pytest.raises(ValueError, match="d \\* P"):
        backend.assign_nearest(x, coarse_t, G, panels[:-8].copy(), pcol, ids, nprobe)
    empty = ids.copy()
    empty[pcol[0]:pcol[1]] = 0xFFFFFFFF
    with pytest.raises(ValueError, match="group 0 has no centroid"):
        backend.assign_nearest(x, coarse_t, G, panels, pcol, empty, nprobe)
    with pytest.raises(TypeError, match="float32"):
        backend.assign_nearest(x.astype(np.float64), coarse_t, G, panels, pcol, ids, nprobe)


def test_kmeans_above_the_default_nlist_uses_the_grouped_refinement(monkeypatch):
    # above DEFAULT_MAX_NLIST the global refinement is a grouped Lloyd step, not a flat faiss iteration
    monkeypatch.setattr(clustering, "DEFAULT_MAX_NLIST", 1024)
    calls = []
    real = clustering._lloyd_step
    monkeypatch.setattr(clustering, "_lloyd_step", lambda *a: calls.append(a[1].shape) or real(*a))
    cents, x = _clustered(5, 40000, 2048, 32)
    got = clustering.train_centroids(x, 2048, 2, 0)
    assert calls == [(2048, 32)]
    assert got.shape == (2048, 32)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    # the refined centroids fit the tokens at least as well as the two-level ones before the step
    monkeypatch.setattr(clustering, "REFINE_PER_CENTROID", 0)
    before = clustering.train_centroids(x, 2048, 2, 0)
    fit = lambda c: np.mean(np.max(x[:5000] @ c.T, axis=1))  # noqa: E731
    assert fit(got) >= fit(before) - 1e-3


def test_lloyd_step_moves_each_centroid_to_its_mean():
    x = np.array([[1, 0], [0.8, 0.6], [0, 1], [-0.6, 0.8]], np.float32)
    x = np.repeat(x, 4, axis=0)
    cents = _unit(np.array([[1, 0.1], [-0.1, 1], [0, -1]], np.float32))
    out = clustering._lloyd_step(np.ascontiguousarray(np.tile(x, (1, 4))), np.tile(cents, (1, 4)), 0)
    # each centroid moves to the (unnormalised) sum of the tokens it wins; one that wins none stays
    win = np.argmax(np.tile(x, (1, 4)) @ np.tile(cents, (1, 4)).T, axis=1)
    assert set(win.tolist()) == {0, 1}  # centroid 2 wins nothing
    for c in range(3):
        mine = np.tile(x, (1, 4))[win == c]
        want = mine.sum(axis=0) if len(mine) else np.tile(cents, (1, 4))[c]
        np.testing.assert_allclose(out[c], want, rtol=1e-6)


def test_kmeans_sample_grows_past_the_default_nlist():
    assert clustering.default_kmeans_sample(16384, 10**8) == 1 << 20
    assert clustering.default_kmeans_sample(131072, 10**8) == 32 * 131072
    assert clustering.default_kmeans_sample(1 << 20, 10**9) == 1 << 23
    assert clustering.default_kmeans_sample(131072, 10**6) == 10**6


def _int8_pair(cents: np.ndarray) -> tuple[clustering.Assigner, clustering.Assigner]:
    a8, af = clustering.Assigner(cents, int8=True), clustering.Assigner(cents, int8=False)
    assert a8.int8 is not None and af.int8 is None
    return a8, af


int8_cpu = pytest.mark.skipif(not kernels.INT8_VNNI, reason="the int8 candidate scores need AVX-512 VNNI")


@native
@int8_cpu
@pytest.mark.parametrize("table", ["float", "4-bit", "int8"])
@pytest.mark.parametrize("d", [128, 24])
def test_int8_candidates_give_the_float32_codes(table, d):
    cents, x = _clustered(8, 30000, 5000, d)
    if table == "4-bit":  # an index's stored centroids: small integers times a scale, coded exactly
        cents = codec.dequantize_centroids4(*codec.quantize_centroids4(cents))
    if table == "int8":
        cents = codec.dequantize_centroids(*codec.quantize_centroids(cents))
    cents[4000:4100] = cents[0:100]  # exact ties under two ids: the lower one wins in both kernels
    x[:100] = cents[:100]
    x[100:200] *= 1e3  # scores far from 1: the margin follows the norms
    x[200:300] *= 1e-3
    x[300:303] = 0.0  # every score ties at 0: every column is a candidate, the lowest id wins
    a8, af = _int8_pair(cents)
    got, want = a8.assign(x), af.assign(x)
    np.testing.assert_array_equal(got, want)
    assert (got[:100] < 4000).all()
    # and thread count and batch split do not change them
    np.testing.assert_array_equal(_core.assign_nearest(x, *a8._grouped, num_threads=1, int8=a8.int8), got)
    np.testing.assert_array_equal(np.concatenate([a8.assign(x[:9001]), a8.assign(x[9001:])]), got)


@native
@int8_cpu
@pytest.mark.parametrize("nprobe", [1, 1000])
def test_int8_candidates_at_every_probe_count(nprobe):
    # one group (the probe list's boundary holds every group) and every group (no boundary)
    cents, x = _clustered(12, 8000, 4096, 64)
    a8 = clustering.Assigner(cents, nprobe=nprobe, int8=True)
    af = clustering.Assigner(cents, nprobe=nprobe, int8=False)
    np.testing.assert_array_equal(a8.assign(x), af.assign(x))
    if nprobe == 1000:  # every group probed: the exact nearest centroid
        assert (a8.assign(x) == np.argmax(x @ cents.T, axis=1)).mean() > 0.999
    assert (clustering.Assigner(cents).int8 is not None) == kernels.INT8_VNNI  # the default follows the CPU


@native
@int8_cpu
def test_int8_candidates_fall_back_on_tokens_that_are_not_finite():
    cents, x = _clustered(9, 20000, 4096, 64)
    x[17000, 3] = np.nan  # the chunk of tokens holding these takes the float32 kernel
    x[17001, 5] = np.inf
    a8, af = _int8_pair(cents)
    np.testing.assert_array_equal(a8.assign(x), af.assign(x))


@native
def test_int8_layout_errors_name_the_fix():
    cents, x = _clustered(10, 100, 4096, 32)
    a = clustering.Assigner(cents, int8=True)
    layout = a.int8
    with pytest.raises(ValueError, match="9 arrays"):
        _core.assign_nearest(x, *a._grouped, int8=layout[:8])
    with pytest.raises(ValueError, match="panel arrays must match"):
        _core.assign_nearest(x, *a._grouped, int8=(*layout[:5], layout[5][:-16].copy(), *layout[6:]))
    with pytest.raises(ValueError, match="group_bound"):
        _core.assign_nearest(x, *a._grouped, int8=(*layout[:8], layout[8][:-1].copy()))
    coarse_t, G, panels, pcol, ids, nprobe = a._grouped
    odd_x, _, odd = _odd_layout(11)  # groups padded to multiples of 8, not 16
    with pytest.raises(ValueError, match="multiple of 16"):
        _core.assign_nearest(odd_x, *odd, 3, int8=layout)
    # the reference takes the keyword and gives the same codes without it
    np.testing.assert_array_equal(ref.assign_nearest(x, *a._grouped, int8=layout), ref.assign_nearest(x, *a._grouped))
