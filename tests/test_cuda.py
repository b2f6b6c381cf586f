"""The CUDA twins (plaidx._cuda) against the CPU kernels, and the device= path of the public API.

The first group runs everywhere (device naming, clear errors without a GPU, the build report). The
rest needs a usable GPU and is skipped otherwise; each compares the GPU with the native CPU kernels
(or the reference when the native module is missing): exact where the arithmetic is the same (decoding),
to float rounding and tie-aware elsewhere (the GPU sums in another fixed order).
"""

from __future__ import annotations

import numpy as np
import pytest
from synth import clustered_collection
from test_kernels import (
    BACKENDS,
    DIMS,
    NBITS,
    NO_MASK,
    _unit,
    assert_topk_equivalent,
    make_collection,
    make_queries,
    run_exact,
    run_search,
)

import plaidx
from plaidx.engine import gpu
from plaidx.engine import reference as ref

CPU = BACKENDS[-1].values[0] or ref  # the native module when built, else the reference
HAVE_GPU = gpu.cuda_info()["cuda"]
needs_gpu = pytest.mark.skipif(not HAVE_GPU, reason=f"no usable CUDA GPU: {gpu.cuda_info()['cuda_reason']}")


def upload(col, with_ivf=True):
    c = col
    ivf = (c["ivf"], c["ivf_offsets"]) if with_ivf else (None, None)
    return gpu.module().Collection(c["codes"], c["packed"], c["doc_offsets"], c["centroids"], c["weights"],
                                   c["nbits"], *ivf, device=0)


# ------------------------------------------------------------------------------------ everywhere
def test_device_names_are_parsed_and_checked():
    assert gpu.resolve_device(None) is None
    assert gpu.resolve_device("cpu") is None
    assert gpu.resolve_device(" CPU ") is None
    for bad in ("gpu", "cuda:x", "cuda:-1", "tpu:0", 3):
        with pytest.raises(ValueError, match="device must be"):
            gpu.resolve_device(bad)


def test_build_info_reports_cuda_and_why_not():
    info = plaidx.build_info()
    assert isinstance(info["cuda"], bool)
    if info["cuda"]:
        assert info["cuda_reason"] is None and info["cuda_device_count"] >= 1 and info["cuda_name"]
    else:
        assert isinstance(info["cuda_reason"], str) and len(info["cuda_reason"]) > 10


@pytest.mark.skipif(HAVE_GPU, reason="checks the error of a machine without a usable GPU")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    docs, queries, _ = clustered_collection(n_docs=40, dim=32, n_topics=8, mean_len=10, n_queries=2, q_len=4)
    index = plaidx.Index.build(tmp_path / "ix", docs, nlist=8)
    before = sorted(p.name for p in (tmp_path / "ix").iterdir())
    with pytest.raises(RuntimeError, match="needs a usable CUDA GPU.*device='cpu'"):
        index.search(queries, k=3, device="cuda")
    with pytest.raises(RuntimeError, match="needs a usable CUDA GPU"):
        plaidx.maxsim(queries[0], docs[:3], device="cuda:0")
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == before
    s, i = index.search(queries, k=3, device="cpu")
    assert (i >= 0).all() and np.isfinite(s).all()


# ------------------------------------------------------------------------------------ kernels
@needs_gpu
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("nbits", NBITS)
def test_decompress_matches_cpu(nbits, d):
    col = make_collection(nbits * 7 + d, ndocs=50, d=d, nbits=nbits)
    args = (col["codes"], col["packed"], col["centroids"], col["weights"], nbits)
    raw = gpu.module().decompress(*args, False)
    np.testing.assert_array_equal(raw, CPU.decompress(*args, False))  # one float addition: exact
    np.testing.assert_allclose(gpu.module().decompress(*args, True), CPU.decompress(*args, True),
                               rtol=2e-6, atol=1e-7)


@needs_gpu
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("qlen", [1, 8, 32, 45])
def test_centroid_scores_match_cpu(d, qlen):
    rng = np.random.default_rng(d + qlen)
    Q = _unit(rng.standard_normal((3, qlen, d)))
    ct = np.ascontiguousarray(_unit(rng.standard_normal((300, d))).T)  # nlist 300: a partial last block
    np.testing.assert_allclose(gpu.module().centroid_scores(Q, ct), Q @ ct, rtol=1e-5, atol=1e-5)


@needs_gpu
@pytest.mark.parametrize("qlen", [1, 32, 70])
def test_maxsim_matches_cpu_over_ragged_documents(qlen):
    rng = np.random.default_rng(qlen)
    d = 96
    lens = np.array([1, 0, 5, 8192, 33, 2, 0, 100])  # empty documents score 0; one 8192-token document
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    values = _unit(rng.standard_normal((int(offsets[-1]), d)))
    Q = _unit(rng.standard_normal((4, qlen, d)))
    got = gpu.module().maxsim(Q, values, offsets)
    np.testing.assert_allclose(got, CPU.maxsim(Q, values, offsets), rtol=1e-5, atol=1e-4)
    assert (got[:, lens == 0] == 0).all()


@needs_gpu
@pytest.mark.parametrize("nbits,d", [(1, 64), (2, 96), (2, 136), (4, 72)])
def test_pq_decompress_and_search_match_cpu(nbits, d):
    """The pq residual codec (format 5) on the GPU: the CPU's decoded bytes exactly (an exact product and one
    rounding), and its float32 search results."""
    from test_pq_codec import pq_collection

    col = pq_collection(nbits * 5 + d, nbits, d=d, ndocs=200, nlist=32, max_len=30)
    args = (col["codes"], col["packed"], col["centroids"], col["weights"], nbits)
    np.testing.assert_array_equal(gpu.module().decompress(*args, False), CPU.decompress(*args, False))
    Q, S = make_queries(nbits + d, col, nq=4, qlen=16)
    coll = upload(col)
    for nprobe, threshold, ndocs, n_exact, k in [(2, 0.0, 40, 10, 5), (32, -1.0, 200, 200, 10)]:
        want = run_search(CPU, Q, S, col, nprobe=nprobe, threshold=threshold, ndocs=ndocs, n_exact=n_exact, k=k)
        assert_topk_equivalent(coll.search(Q, NO_MASK, nprobe, threshold, ndocs, n_exact, k), want)
    assert_topk_equivalent(coll.exact_search(Q, NO_MASK, 9), run_exact(CPU, Q, col, k=9))


@needs_gpu
def test_a_pq_index_searches_on_the_gpu_like_the_cpu(tmp_path):
    docs, queries, _ = clustered_collection(n_docs=300, dim=64, n_topics=24, mean_len=30, n_queries=8, q_len=32)
    index = plaidx.Index.build(tmp_path / "ix", docs, nlist=64, residual_codec="pq")
    cpu = index.search(queries, k=10, params=plaidx.SearchParams(exact_scores="float32"))
    assert_topk_equivalent(index.search(queries, k=10, device="cuda"), cpu)
    assert_topk_equivalent(index.search(queries, k=10, device="cuda", exact=True), index.search(queries, k=10,
                                                                                                exact=True))


# ------------------------------------------------------------------------------------ search
@needs_gpu
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("nbits", NBITS)
def test_search_matches_cpu(nbits, d):
    col = make_collection(nbits + d, ndocs=300, d=d, nbits=nbits, nlist=32, max_len=40)
    Q, S = make_queries(nbits + d, col, nq=6, qlen=32)
    coll = upload(col)
    for nprobe, threshold, ndocs, n_exact, k in [(2, 0.0, 40, 10, 5), (4, 0.3, 100, 30, 10), (1, -1.0, 7, 7, 7)]:
        want = run_search(CPU, Q, S, col, nprobe=nprobe, threshold=threshold, ndocs=ndocs, n_exact=n_exact, k=k)
        got = coll.search(Q, NO_MASK, nprobe, threshold, ndocs, n_exact, k)
        assert_topk_equivalent(got, want)
    assert_topk_equivalent(coll.exact_search(Q, NO_MASK, 9), run_exact(CPU, Q, col, k=9))


@needs_gpu
@pytest.mark.parametrize("qlen", [5, 32, 40])
def test_quantized_cell_scores_match_cpu(qlen):
    """quantized=True scores the cells as the CPU search with cell_codes does (int8 values summed as
    floats, exact): the same candidates, so the same documents, scores to the exact stage's rounding."""
    col = make_collection(60 + qlen, ndocs=300, d=96, nbits=2, nlist=700, max_len=30)
    Q, _ = make_queries(60 + qlen, col, nq=5, qlen=qlen)
    cells = CPU.quantize_rows(col["centroids"])
    coll = upload(col)
    for nprobe, threshold, ndocs, n_exact, k in [(2, 0.0, 40, 10, 5), (4, 0.3, 100, 30, 10)]:
        want = run_search(CPU, Q, None, col, nprobe=nprobe, threshold=threshold, ndocs=ndocs, n_exact=n_exact, k=k,
                          cell_codes=cells)
        got = coll.search(Q, NO_MASK, nprobe, threshold, ndocs, n_exact, k, quantized=True)
        assert_topk_equivalent(got, want)


@needs_gpu
@pytest.mark.parametrize("nprobe", [1, 9, 40, 200, 511, 512, 10_000])
def test_probe_paths_match_cpu(nprobe):
    """Every probe template (8, 32, 128, 512 cells per lane) and the every-cell path."""
    col = make_collection(nprobe, ndocs=400, d=64, nbits=2, nlist=1024, max_len=30)
    Q, S = make_queries(nprobe, col, nq=3, qlen=12)
    got = upload(col).search(Q, NO_MASK, nprobe, 0.2, 200, 50, 10)
    assert_topk_equivalent(got, run_search(CPU, Q, S, col, nprobe=nprobe, threshold=0.2, ndocs=200, n_exact=50,
                                           k=10))


@needs_gpu
def test_full_probe_search_equals_exact_search():
    col = make_collection(5, ndocs=120, d=64, nbits=4, nlist=16)
    Q, _ = make_queries(5, col, nq=4, qlen=10)
    coll = upload(col)
    got = coll.search(Q, NO_MASK, 16, -1e9, 120, 120, 12)
    assert_topk_equivalent(got, coll.exact_search(Q, NO_MASK, 12))


@needs_gpu
def test_allowed_mask_padding_and_determinism():
    col = make_collection(11, ndocs=200, d=64, nbits=2, nlist=16)
    Q, S = make_queries(11, col, nq=5, qlen=32)
    allowed = np.zeros(col["ndocs"], np.uint8)
    allowed[::17] = 1  # 12 documents: rows are padded with -inf / -1
    coll = upload(col)
    got = coll.search(Q, allowed, 4, 0.0, 50, 20, 15)
    assert set(got[1][got[1] >= 0].tolist()) <= set(np.flatnonzero(allowed).tolist())
    assert (got[1][:, 12:] == -1).all() and np.isneginf(got[0][:, 12:]).all()
    assert_topk_equivalent(got, run_search(CPU, Q, S, col, allowed, nprobe=4, threshold=0.0, ndocs=50, n_exact=20,
                                           k=15))
    again = coll.search(Q, allowed, 4, 0.0, 50, 20, 15)
    np.testing.assert_array_equal(again[0], got[0])  # bit-identical run to run
    np.testing.assert_array_equal(again[1], got[1])
    assert_topk_equivalent(coll.exact_search(Q, allowed, 15), run_exact(CPU, Q, col, allowed, k=15))
    none = coll.search(Q, np.zeros(col["ndocs"], np.uint8), 4, 0.0, 50, 20, 3)
    assert (none[1] == -1).all()


@needs_gpu
def test_many_queries_span_several_chunks():
    col = make_collection(3, ndocs=3000, d=64, nbits=2, nlist=256, max_len=20)
    Q, S = make_queries(3, col, nq=1100, qlen=4)  # more queries than one chunk holds (1024)
    got = upload(col).search(Q, NO_MASK, 2, 0.1, 64, 16, 5)
    assert_topk_equivalent(got, run_search(CPU, Q, S, col, nprobe=2, threshold=0.1, ndocs=64, n_exact=16, k=5))


@needs_gpu
def test_bad_arguments_raise_value_error():
    col = make_collection(2, ndocs=50, d=64, nlist=1024)
    Q, _ = make_queries(2, col, nq=2, qlen=4)
    coll = upload(col)
    with pytest.raises(ValueError, match="nprobe <= 512"):
        coll.search(Q, NO_MASK, 600, 0.0, 10, 5, 5)
    with pytest.raises(ValueError, match="d = 64"):
        coll.search(Q[:, :, :32].copy(), NO_MASK, 2, 0.0, 10, 5, 5)
    with pytest.raises(ValueError, match="allowed must have shape"):
        coll.search(Q, np.ones(3, np.uint8), 2, 0.0, 10, 5, 5)
    with pytest.raises(ValueError, match="k must be >= 1"):
        coll.exact_search(Q, NO_MASK, 0)
    with pytest.raises(ValueError, match="without its inverted file"):
        upload(col, with_ivf=False).search(Q, NO_MASK, 2, 0.0, 10, 5, 5)
    bad = dict(col, codes=col["codes"].copy())
    bad["codes"][3] = 5000
    with pytest.raises(ValueError, match="centroid id is >= nlist"):
        upload(bad)


# ------------------------------------------------------------------------------------ public API
@needs_gpu
def test_index_search_on_gpu_matches_cpu_across_updates(tmp_path):
    docs, queries, _ = clustered_collection(n_docs=400, dim=64, n_topics=24, mean_len=30, n_queries=12, q_len=32)
    index = plaidx.Index.build(tmp_path / "ix", docs, nlist=64)

    def on_cpu(k=10, nprobe=None, exact=False, doc_ids=None, ndocs=None):  # the GPU's float32 exact stage, on the CPU
        params = None if exact else plaidx.SearchParams(nprobe=nprobe, ndocs=ndocs, exact_scores="float32")
        return index.search(queries, k=k, params=params, exact=exact, doc_ids=doc_ids)

    # the first two filters allow fewer documents than ndocs: every one a candidate, given on the CPU, every cell on
    # the GPU; the third more (100 of 400 over ndocs 50): both probe 4x the default nprobe
    for kw in ({}, {"k": 25, "nprobe": 8}, {"exact": True}, {"doc_ids": np.arange(0, 400, 3)},
               {"doc_ids": np.arange(0, 400, 9), "nprobe": 1}, {"doc_ids": np.arange(0, 400, 4), "ndocs": 50}):
        assert_topk_equivalent(index.search(queries, device="cuda", **kw), on_cpu(**kw))
    with pytest.raises(ValueError, match="runs on the CPU"):
        index.search(queries, device="cuda", params=plaidx.SearchParams(exact_scores="int8"))
    gone = [int(i) for i in index.search(queries[0], k=3, device="cuda")[1]]
    index.delete(gone)
    new = index.add(docs[:20])
    s_gpu, i_gpu = index.search(queries, k=10, device="cuda:0")  # a new generation: a new device copy
    assert_topk_equivalent((s_gpu, i_gpu), on_cpu(k=10))
    assert not set(gone) & set(i_gpu.ravel().tolist())
    s_new, i_new = index.search(queries, k=5, doc_ids=new, device="cuda")
    assert set(i_new.ravel().tolist()) <= set(new.tolist())
    assert_topk_equivalent((s_new, i_new), on_cpu(k=5, doc_ids=new))
    got = plaidx.maxsim(queries[:2], docs[:30], device="cuda")
    np.testing.assert_allclose(got, plaidx.maxsim(queries[:2], docs[:30]), rtol=1e-5, atol=1e-4)


@needs_gpu
@pytest.mark.parametrize("kind", ["int8", "float16"])
def test_rerank_tier_on_the_gpu_matches_the_cpu(tmp_path, kind):
    """On a GPU the PLAID stages run there and KeptVectors.rerank scores the candidates with the CPU
    kernel the CPU search uses inside: the same scores for the same documents, the same top k up to
    candidates that the GPU's centroid sums order differently at the rerank boundary."""
    docs, queries, _ = clustered_collection(n_docs=400, dim=64, n_topics=24, mean_len=30, n_queries=12, q_len=32)
    index = plaidx.Index.build(tmp_path / "ix", docs, nlist=64, keep_vectors=kind)
    for kw in ({}, {"rerank": 40}, {"exact": True}):
        s_gpu, i_gpu = index.search(queries, k=10, device="cuda", **kw)
        s_cpu, i_cpu = index.search(queries, k=10, **kw)
        if "rerank" not in kw:  # every candidate scored (at most 400 <= rerank 512) or exhaustive: the same sets
            assert_topk_equivalent((s_gpu, i_gpu), (s_cpu, i_cpu))
        for row in range(len(queries)):
            cpu = dict(zip(i_cpu[row].tolist(), s_cpu[row].tolist()))
            same = [(s, cpu[i]) for i, s in zip(i_gpu[row].tolist(), s_gpu[row].tolist()) if i in cpu]
            assert len(same) >= 9 and all(a == b for a, b in same)


@needs_gpu
def test_empty_cells_are_never_probed_on_the_gpu():
    col = make_collection(21, ndocs=80, d=64, nbits=2, nlist=16)
    col["codes"] = (col["codes"] % 12 + 4).astype(np.uint16)  # cells 0-3 hold no token
    col["ivf"], col["ivf_offsets"] = ref.build_ivf(col["codes"], col["doc_offsets"], 16)
    Q, _ = make_queries(21, col, nq=3, qlen=6)
    col["centroids"][:4] = _unit(Q[0].mean(axis=0, keepdims=True) + 1e-3 * np.arange(4)[:, None])
    S = np.ascontiguousarray(Q @ col["centroids"].T)
    got = upload(col).search(Q, NO_MASK, 1, -1.0, 40, 20, 5)
    assert (got[1] >= 0).all()
    assert_topk_equivalent(got, run_search(CPU, Q, S, col, nprobe=1, threshold=-1.0, ndocs=40, n_exact=20, k=5))


# ------------------------------------------------------------------------------------ build kernels
# Each build kernel against its CPU twin (plaidx.engine.gpu_build.HostKernels: numpy argmax and sums,
# the native compress kernel). Codes may differ only where the two best centroids tie to float rounding.
needs_build_kernels = pytest.mark.skipif(not HAVE_GPU or not hasattr(gpu._cuda, "Compressor"),
                                         reason="needs a usable CUDA GPU and plaidx._cuda with the build kernels")


def near_tie(x, centroids, tol=1e-5):
    """bool (n,): the best two inner products of each row are within tol."""
    s = np.sort(x @ centroids.T, axis=1)
    return s[:, -1] - s[:, -2] <= tol


@needs_build_kernels
@pytest.mark.parametrize("d", DIMS + [8, 136])
@pytest.mark.parametrize(("n", "nlist"), [(1, 1), (127, 5), (1000, 300), (5000, 4096)])
def test_assign_matches_cpu(n, nlist, d):
    from plaidx.engine import gpu_build

    rng = np.random.default_rng(n + nlist + d)
    x = _unit(rng.standard_normal((n, d)))
    c = _unit(rng.standard_normal((nlist, d)))
    codes, scores = gpu.module().assign(x, c)
    want = gpu_build.HostKernels().assign(x, c)
    differ = codes != want
    if nlist > 1:
        assert not (differ & ~near_tie(x, c)).any()
    np.testing.assert_allclose(scores, (x * c[codes]).sum(axis=1), rtol=1e-5, atol=1e-5)


@needs_build_kernels
def test_assign_ties_take_the_lowest_centroid():
    x = _unit(np.random.default_rng(0).standard_normal((300, 64)))
    c = np.repeat(_unit(np.random.default_rng(1).standard_normal((10, 64))), 3, axis=0)  # each centroid 3 times
    codes, _ = gpu.module().assign(x, c)
    assert (codes % 3 == 0).all()


@needs_build_kernels
@pytest.mark.parametrize("nlist", [7, 300])
def test_kmeans_update_sums_in_faiss_order_exactly(nlist):
    from plaidx.engine import gpu_build

    rng = np.random.default_rng(nlist)
    x = _unit(rng.standard_normal((3000, 96)))
    c = _unit(rng.standard_normal((nlist, 96)))
    km = gpu.module().KMeans(x)
    with pytest.raises(ValueError, match="previous assign"):
        km.update(nlist)
    codes, _ = km.assign(c)
    means, counts = km.update(nlist)
    host = gpu_build.HostKernels().kmeans_points(x)
    host.codes = codes  # the same assignment: the sums then agree bit for bit
    want_means, want_counts = host.update(nlist)
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_array_equal(means, want_means)
    assert km.device_bytes > x.nbytes


@needs_build_kernels
@pytest.mark.parametrize("nbits", NBITS)
@pytest.mark.parametrize("d", DIMS)
def test_compress_residuals_matches_cpu_exactly(nbits, d):
    from plaidx.engine import codec as codec_mod
    from plaidx.engine import kernels

    rng = np.random.default_rng(nbits * d)
    x = _unit(rng.standard_normal((777, d)))
    c = _unit(rng.standard_normal((40, d)))
    codes = rng.integers(0, 40, 777).astype(np.uint16)
    res = np.subtract(x, c[codes], dtype=np.float32)
    cutoffs, _ = codec_mod.train_codebooks(res, nbits)
    packed, norms = gpu.module().compress_residuals(x, codes, c, cutoffs, nbits)
    np.testing.assert_array_equal(packed, kernels.compress(res, cutoffs, nbits))
    np.testing.assert_allclose(norms, np.linalg.norm(res, axis=1), rtol=1e-5)


@needs_build_kernels
@pytest.mark.parametrize("nbits", [2, 4])
def test_compressor_streams_chunks_like_the_cpu_twin(nbits):
    from plaidx.engine import codec as codec_mod
    from plaidx.engine import gpu_build

    rng = np.random.default_rng(nbits)
    x = _unit(rng.standard_normal((2500, 128)))
    c = _unit(rng.standard_normal((256, 128)))
    res = x - c[gpu_build.HostKernels().assign(x, c)]
    cutoffs, _ = codec_mod.train_codebooks(res, nbits)
    comp = gpu.module().Compressor(c, cutoffs, nbits, 300)  # 300-row chunks: 9 launches, a partial last one
    codes, packed, norms = comp.compress(x)
    w_codes, w_packed, w_norms = gpu_build.HostKernels().compressor(c, cutoffs, nbits, 300).compress(x)
    same = codes == w_codes
    assert same.mean() >= 0.999 and not (~same & ~near_tie(x, c)).any()
    np.testing.assert_array_equal(packed[same], w_packed[same])
    np.testing.assert_allclose(norms, w_norms, rtol=1e-5, atol=1e-6)
    bad = cutoffs.copy()
    bad[3] = bad[3][::-1].copy()
    if nbits > 1:
        with pytest.raises(ValueError, match="ascending"):
            gpu.module().Compressor(c, np.ascontiguousarray(bad), nbits, 300)
    with pytest.raises(ValueError, match="cutoffs must have shape"):
        gpu.module().Compressor(c, cutoffs[:, :1].copy(), 8, 300)


@needs_build_kernels
def test_compressor_reads_a_torch_cuda_tensor():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    from plaidx.engine import codec as codec_mod

    rng = np.random.default_rng(5)
    x = _unit(rng.standard_normal((1000, 64)))
    c = _unit(rng.standard_normal((32, 64)))
    cutoffs, _ = codec_mod.train_codebooks(x - c[0], 2)
    comp = gpu.module().Compressor(c, cutoffs, 2, 256)
    t = torch.from_numpy(x).cuda()
    torch.cuda.current_stream().synchronize()
    got = comp.compress_device(t.data_ptr(), t.shape[0])
    for a, b in zip(got, comp.compress(x)):
        np.testing.assert_array_equal(a, b)


@needs_build_kernels
@pytest.mark.parametrize(("k", "niter"), [(64, 4), (500, 3)])
def test_gpu_kmeans_follows_faiss(k, niter):
    import faiss

    from plaidx.engine import gpu_build

    x = _unit(np.random.default_rng(k).standard_normal((5000, 64)))
    got = gpu_build.kmeans(x, k, niter, 3, gpu_build.CudaKernels(0))
    km = faiss.Kmeans(64, k, niter=niter, seed=3, spherical=True, verbose=False,
                      max_points_per_centroid=(5000 + k - 1) // k, min_points_per_centroid=1)
    km.train(x)
    close = np.abs(got - km.centroids).max(axis=1) < 1e-5
    assert close.mean() >= 0.99, close.mean()  # a near tie flipped by float order may move a centroid


@needs_build_kernels
@pytest.mark.parametrize(("nlist", "kmeans"), [(64, "auto"), (1024, "auto")])
def test_index_build_on_gpu_equals_cpu_build(tmp_path, nlist, kmeans):
    docs, queries, _ = clustered_collection(n_docs=600, dim=64, n_topics=40, mean_len=30, n_queries=16, q_len=32)
    cpu = plaidx.Index.build(tmp_path / "cpu", docs, nbits=2, nlist=nlist, kmeans=kmeans, batch_tokens=4000)
    dev = plaidx.Index.build(tmp_path / "gpu", iter(docs), nbits=2, nlist=nlist, kmeans=kmeans, batch_tokens=4000,
                             device="cuda")
    a, b = cpu._snap, dev._snap
    assert sorted(a.a) == sorted(b.a) and b.manifest["build"]["device"] == "cuda:0"
    assert (a.nlist, a.n_tokens) == (b.nlist, b.n_tokens)
    close = np.abs(a.codec.centroids - b.codec.centroids).max(axis=1) < 1e-4
    assert close.mean() >= 0.99, close.mean()
    np.testing.assert_allclose(b.a["bucket_weights"], a.a["bucket_weights"], atol=1e-3)
    same = (np.asarray(a.a["codes"]) == np.asarray(b.a["codes"])).mean()
    assert same >= 0.999, same
    s1, i1 = cpu.search(queries, k=10)
    s2, i2 = dev.search(queries, k=10)
    overlap = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(i1, i2)])
    assert overlap >= 0.98, overlap
    assert dev.search(queries, k=10, device="cuda")[1].shape == (16, 10)


@needs_build_kernels
def test_streaming_build_from_cuda_tensors_equals_the_build_from_arrays(tmp_path):
    """The text pipeline's device path: an EncodedCorpus handing over CUDA tensors (compressed in place)
    gives the index the GPU build gives from the same vectors on the host, array for array."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    from plaidx.engine.gpu_build import EncodedCorpus

    docs, queries, _ = clustered_collection(n_docs=500, dim=64, n_topics=30, mean_len=25, n_queries=8, q_len=16)

    class TensorCorpus(EncodedCorpus):
        calls = 0

        def encode(self, indices):
            TensorCorpus.calls += 1
            t = torch.from_numpy(np.concatenate([docs[i] for i in indices])).cuda()
            torch.cuda.current_stream().synchronize()
            return t

    want = plaidx.Index.build(tmp_path / "arrays", docs, nlist=64, batch_tokens=3000, device="cuda")
    got = plaidx.Index.build(tmp_path / "tensors", TensorCorpus(np.array([len(d) for d in docs]), 64), nlist=64,
                             batch_tokens=3000, device="cuda")
    assert TensorCorpus.calls < 30  # batches of documents, not one call per document
    for name in want._snap.a:
        np.testing.assert_array_equal(np.asarray(got._snap.a[name]), np.asarray(want._snap.a[name]), err_msg=name)
    np.testing.assert_array_equal(got.search(queries, k=5)[1], want.search(queries, k=5)[1])


@needs_build_kernels
def test_rag_index_on_the_gpu_matches_the_cpu_index(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    from encoder_fixtures import WORDS, make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", "stanford", query_length=16, document_length=32)
    rag = plaidx.RAGPretrainedModel.from_pretrained(str(ckpt), index_root=tmp_path / "ix", verbose=0)
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 20)))) for _ in range(80)]
    ids = [f"d{i}" for i in range(len(texts))]
    rag.index(texts, document_ids=ids, index_name="cpu", split_documents=False)
    want = rag.search(texts[:6], k=3)
    rag.index(texts, document_ids=ids, index_name="gpu", split_documents=False, device="cuda")
    got = rag.search(texts[:6], k=3)
    assert [[r["document_id"] for r in row] for row in got] == [[r["document_id"] for r in row] for row in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose([r["score"] for r in g], [r["score"] for r in w], atol=1e-3)


@needs_build_kernels
def test_build_with_codec_from_on_gpu_gives_the_cpu_codes(tmp_path):
    """codec_from skips k-means: the GPU then assigns and compresses against the very same codec."""
    docs, _, _ = clustered_collection(n_docs=300, dim=64, n_topics=20, mean_len=30, n_queries=1, q_len=4)
    base = plaidx.Index.build(tmp_path / "base", docs, nlist=256)
    cpu = plaidx.Index.build(tmp_path / "cpu", docs[::-1], codec_from=base)
    dev = plaidx.Index.build(tmp_path / "gpu", docs[::-1], codec_from=base, device="cuda")
    same = np.asarray(cpu._snap.a["codes"]) == np.asarray(dev._snap.a["codes"])
    assert same.mean() >= 0.999
    np.testing.assert_array_equal(np.asarray(cpu._snap.a["residuals"])[same], np.asarray(dev._snap.a["residuals"])[same])
