"""The GPU build's orchestration (plaidx.engine.gpu_build) on any machine: faiss's k-means rules, the
streaming reader, the device= errors, and a whole build through the CPU twin of the GPU kernels.

None of this runs a GPU: HostKernels is the numpy/CPU-kernel twin of the CUDA kernels' interface, so
these tests check the orchestration around the kernels; tests/test_cuda.py checks the kernels themselves
against the same twin on a GPU.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import faiss
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from synth import clustered_collection

import plaidx
from plaidx.engine import clustering, gpu, gpu_build
from plaidx.engine import index as index_mod

HAVE_GPU = gpu.cuda_info()["cuda"]
ROOT = Path(__file__).resolve().parents[1]


def unit_rows(n: int, d: int, seed: int, topics: int = 0, noise: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if topics:
        x = rng.standard_normal((topics, d))[rng.integers(0, topics, n)] + noise * rng.standard_normal((n, d))
    else:
        x = rng.standard_normal((n, d))
    x = x.astype(np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True))


def faiss_kmeans(x: np.ndarray, k: int, niter: int, seed: int, init: np.ndarray | None = None) -> np.ndarray:
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, spherical=True, verbose=False,
                      max_points_per_centroid=(x.shape[0] + k - 1) // k, min_points_per_centroid=1)
    km.train(x, init_centroids=init)
    return km.centroids


# ------------------------------------------------------------------------------------ k-means
@pytest.mark.parametrize(("n", "k", "niter", "seed"), [(3000, 64, 4, 3), (2000, 300, 6, 0), (500, 499, 2, 5),
                                                      (400, 400, 3, 1)])
def test_kmeans_follows_faiss_step_by_step(n, k, niter, seed):
    """Same initial points (faiss.rand_perm), same sums and normalisation: equal to float rounding on data
    without near ties (faiss's GEMM sums in another order, which can flip a true near tie)."""
    x = unit_rows(n, 48, seed)
    got = gpu_build.kmeans(x, k, niter, seed, gpu_build.HostKernels())
    np.testing.assert_allclose(got, faiss_kmeans(x, k, niter, seed), atol=2e-6)


def test_kmeans_from_given_centroids_follows_faiss():
    x = unit_rows(2500, 32, 4, topics=30)
    init = unit_rows(100, 32, 9)
    got = gpu_build.kmeans(x, 100, 1, 0, gpu_build.HostKernels(), init=init)
    np.testing.assert_allclose(got, faiss_kmeans(x, 100, 1, 0, init=init), atol=2e-6)


def test_kmeans_rejects_too_few_points_and_nan():
    x = unit_rows(10, 16, 0)
    with pytest.raises(ValueError, match="at least as many points as centroids"):
        gpu_build.kmeans(x, 11, 2, 0, gpu_build.HostKernels())
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gpu_build.kmeans(x, 4, 2, 0, gpu_build.HostKernels())


@pytest.mark.parametrize("method", ["auto", "flat"])
def test_train_centroids_matches_the_cpu_two_level_kmeans(method):
    """clustering.train_centroids (faiss) and its device twin, two-level (1024 centroids) and flat."""
    x = unit_rows(4096, 16, 2)
    want = clustering.train_centroids(x, 1024, 2, 0, method=method)
    got = gpu_build.train_centroids(x, 1024, 2, 0, gpu_build.HostKernels(), method=method)
    assert got.shape == want.shape == (1024, 16)
    close = np.abs(got - want).max(axis=1) < 1e-5
    assert close.mean() >= 0.99, close.mean()  # observed 1.0 at d 64; a near tie may move a centroid


def test_split_random_draws_are_faiss_random_generator():
    ref = faiss.RandomGenerator(gpu_build.SPLIT_SEED)
    want = np.array([ref.rand_float() for _ in range(3000)], np.float32)
    draws = gpu_build._FaissFloats(gpu_build.SPLIT_SEED, block=1000)
    got = np.concatenate([draws.take(7), draws.take(1500), draws.take(1493)])
    np.testing.assert_array_equal(got, want)


def split_one_by_one(centroids: np.ndarray, hassign: np.ndarray, n: int) -> None:
    """faiss's split_clusters written as its loop, one faiss draw per step (the oracle)."""
    k = centroids.shape[0]
    rng = faiss.RandomGenerator(gpu_build.SPLIT_SEED)
    eps = 1.0 / 1024.0
    for ci in range(k):
        if hassign[ci] != 0:
            continue
        cj = 0
        while True:
            p = np.float32((float(hassign[cj]) - 1.0) / float(np.float32(n - k)))
            if np.float32(rng.rand_float()) < p:
                break
            cj = (cj + 1) % k
        src = centroids[cj].astype(np.float64)
        sign = np.where(np.arange(centroids.shape[1]) % 2 == 0, 1.0, -1.0)
        centroids[ci] = (src * (1 + sign * eps)).astype(np.float32)
        centroids[cj] = (src * (1 - sign * eps)).astype(np.float32)
        hassign[ci] = hassign[cj] / np.float32(2)
        hassign[cj] -= hassign[ci]


def test_split_empty_clusters_is_faiss_split_clusters():
    rng = np.random.default_rng(0)
    k, n = 300, 5000
    hassign = rng.multinomial(n, rng.dirichlet(np.ones(k) * 0.3)).astype(np.float32)
    hassign[[0, 7, 150, 299]] = 0
    n = int(hassign.sum())
    cents = unit_rows(k, 24, 1)
    want_c, want_h = cents.copy(), hassign.copy()
    split_one_by_one(want_c, want_h, n)
    got_c, got_h = cents.copy(), hassign.copy()
    assert gpu_build.split_empty_clusters(got_c, got_h, n) == int((hassign == 0).sum())
    np.testing.assert_array_equal(got_c, want_c)
    np.testing.assert_array_equal(got_h, want_h)
    assert (got_h > 0).all()


# ------------------------------------------------------------------------------------ device=
def test_bad_device_names_are_value_errors(tmp_path):
    docs, _, _ = clustered_collection(n_docs=20, dim=16, n_topics=4, mean_len=6, n_queries=1, q_len=4)
    for bad in ("gpu", "cuda:x", "tpu"):
        with pytest.raises(ValueError, match="device must be"):
            plaidx.Index.build(tmp_path / "ix", docs, nlist=4, device=bad)
    assert not (tmp_path / "ix").exists()


@pytest.mark.skipif(HAVE_GPU, reason="checks the error of a machine without a usable GPU")
def test_build_on_cuda_without_a_gpu_is_a_clear_error_and_writes_nothing(tmp_path):
    docs, _, _ = clustered_collection(n_docs=20, dim=16, n_topics=4, mean_len=6, n_queries=1, q_len=4)
    reason = gpu.cuda_info()["cuda_reason"]
    with pytest.raises(RuntimeError, match="needs a usable CUDA GPU") as err:
        plaidx.Index.build(tmp_path / "ix", docs, nlist=4, device="cuda")
    assert reason in str(err.value) and "Build on the CPU with device='cpu'" in str(err.value)
    assert not (tmp_path / "ix").exists()
    index = plaidx.Index.build(tmp_path / "ix", docs, nlist=4, device="cpu")  # the CPU path is unchanged
    assert index.n_tokens == sum(len(d) for d in docs)


# ------------------------------------------------------------------------------------ whole build
def test_build_through_the_device_steps_equals_the_cpu_build(tmp_path, monkeypatch):
    """Index.build with BuildOps over the CPU twin kernels (not a GPU) against the plain CPU build: the
    same files and manifest fields, the same nlist and codebooks, >= 99.9% identical codes, the same
    search results. The GPU twin of this test is in tests/test_cuda.py."""
    docs, queries, _ = clustered_collection(n_docs=300, dim=64, n_topics=20, mean_len=30, n_queries=8, q_len=16)
    cpu = plaidx.Index.build(tmp_path / "cpu", docs, nbits=2, nlist=64, batch_tokens=1000)
    twin = gpu_build.BuildOps(gpu_build.HostKernels(), "host-twin")
    monkeypatch.setattr(index_mod, "build_ops", lambda device: twin)
    dev = plaidx.Index.build(tmp_path / "dev", iter(docs), nbits=2, nlist=64, batch_tokens=1000, device="twin")
    a, b = cpu._snap, dev._snap
    assert sorted(a.a) == sorted(b.a) and b.manifest["build"]["device"] == "host-twin"
    assert set(b.manifest["build"]["stream_timings"]) == {"wait_s", "device_s", "write_s"}
    assert (a.nlist, a.n_tokens) == (b.nlist, b.n_tokens)
    np.testing.assert_allclose(b.a["bucket_weights"], a.a["bucket_weights"], atol=1e-5)
    np.testing.assert_allclose(b.a["bucket_cutoffs"], a.a["bucket_cutoffs"], atol=1e-5)
    assert (np.asarray(a.a["codes"]) == np.asarray(b.a["codes"])).mean() >= 0.999
    np.testing.assert_array_equal(a.a["doc_offsets"], b.a["doc_offsets"])
    s1, i1 = cpu.search(queries, k=10)
    s2, i2 = dev.search(queries, k=10)
    assert (i1 == i2).mean() >= 0.98
    np.testing.assert_allclose(s1, s2, atol=1e-3)


# ------------------------------------------------------------------------------------ compiling
def nvcc_path() -> str | None:
    return shutil.which("nvcc") or (("/usr/local/cuda/bin/nvcc") if Path("/usr/local/cuda/bin/nvcc").exists() else None)


def test_cuda_module_was_compiled_with_its_kernels_when_nvcc_is_present():
    """CI builds plaidx where nvcc is installed: a CUDA compile error must fail here, not fall back to the
    stub module silently."""
    if nvcc_path() is None:
        pytest.skip("nvcc is not installed: plaidx._cuda is the stub by design")
    reason = gpu.cuda_info()["cuda_reason"] or ""
    assert "the CUDA build failed" not in reason, reason
    assert "built without CUDA" not in reason or "PLAIDX_NO_CUDA" in reason, reason
    if not hasattr(gpu.module(), "Compressor"):
        pytest.skip("plaidx._cuda predates the build kernels in csrc/cuda/build.cu: rebuild it (make setup)")
    assert gpu.cuda_info()["cuda_compiled_archs"] not in ("", "none")


@pytest.mark.slow
@pytest.mark.parametrize("source", sorted(p.name for p in (ROOT / "csrc" / "cuda").glob("*.cu")))
def test_cuda_sources_compile_with_nvcc(source, tmp_path):
    """Compile-only check of each CUDA source for sm_90 (about a minute each on two cores)."""
    nvcc = nvcc_path()
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    res = subprocess.run([nvcc, "-c", str(ROOT / "csrc" / "cuda" / source), "-o", str(tmp_path / "x.o"),
                          "-std=c++17", "-O1", f"-I{ROOT / 'csrc'}", "-gencode", "arch=compute_90,code=sm_90"],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]


# ------------------------------------------------------------------------------------ encoded corpora
class ArrayCorpus(gpu_build.EncodedCorpus):
    """An EncodedCorpus over arrays, counting what it encodes (a model would run here)."""

    def __init__(self, docs):
        super().__init__(np.array([len(d) for d in docs]), docs[0].shape[1])
        self.docs = docs
        self.calls: list[int] = []

    def encode(self, indices):
        self.calls.append(len(indices))
        return np.concatenate([self.docs[i] for i in indices])


def test_encoded_corpus_windows_and_sample():
    docs = [np.full((n, 8), i, np.float32) for i, n in enumerate([4, 4, 4, 10, 1, 1, 3])]
    corpus = ArrayCorpus(docs)
    wins = corpus.windows(np.arange(7), 8)
    assert [w.tolist() for w in wins] == [[0, 1], [2, 3], [4, 5, 6]]
    order = np.array([3, 0, 6, 1, 2, 4, 5])
    x, nxt = corpus.gather_sample(order, 1, 6, None, batch_tokens=4)
    assert nxt == 3 and x.shape == (6, 8)  # documents 0 (4 rows) and 6 (2 of its 3 rows)
    np.testing.assert_array_equal(x[:, 0], [0, 0, 0, 0, 6, 6])
    assert np.asarray(corpus[3]).shape == (10, 8) and corpus[3].shape == (10, 8)


def test_encoded_corpus_with_wrong_lengths_is_a_clear_error(tmp_path, monkeypatch):
    docs, _, _ = clustered_collection(n_docs=60, dim=32, n_topics=6, mean_len=12, n_queries=1, q_len=4)
    corpus = ArrayCorpus(docs)
    corpus.lengths = corpus.lengths.copy()
    corpus.lengths[5] += 1  # the model makes one token fewer than promised
    monkeypatch.setattr(index_mod, "build_ops", lambda device: gpu_build.BuildOps(gpu_build.HostKernels(), "twin"))
    with pytest.raises(ValueError, match="token rows where its lengths promise"):
        plaidx.Index.build(tmp_path / "ix", corpus, nlist=8, device="twin")
    assert not list((tmp_path / "ix").glob("manifest.json"))


def test_streaming_build_from_an_encoded_corpus_equals_the_array_build(tmp_path, monkeypatch):
    """The text pipeline's shape on the CPU twin kernels: the sample and the windows are encoded in
    batches (never one document at a time), and the index equals the same kernels' build from the arrays."""
    docs, queries, _ = clustered_collection(n_docs=400, dim=32, n_topics=16, mean_len=20, n_queries=6, q_len=8)
    monkeypatch.setattr(index_mod, "build_ops", lambda device: gpu_build.BuildOps(gpu_build.HostKernels(), "twin"))
    want = plaidx.Index.build(tmp_path / "arrays", docs, nbits=2, nlist=32, batch_tokens=2000, device="twin")
    corpus = ArrayCorpus(docs)
    got = plaidx.Index.build(tmp_path / "corpus", corpus, nbits=2, nlist=32, batch_tokens=2000, device="twin")
    assert max(corpus.calls) > 1 and len(corpus.calls) < 40  # windows and sample batches, not documents
    for name in ("codes", "residuals", "doc_offsets", "bucket_weights"):
        np.testing.assert_array_equal(np.asarray(got._snap.a[name]), np.asarray(want._snap.a[name]))
    np.testing.assert_array_equal(got.search(queries, k=5)[1], want.search(queries, k=5)[1])


def test_passage_corpus_encodes_what_encode_documents_does(tmp_path):
    """rag.encoded.PassageCorpus (the GPU build's text source) on the CPU: token counts known before
    encoding, and windows of passages encoded to the vectors encode_documents gives, in passage order."""
    pytest.importorskip("torch")
    from encoder_fixtures import WORDS, make_tiny_checkpoint

    from plaidx.encoder import ColBERT
    from plaidx.rag.encoded import PassageCorpus

    enc = ColBERT.from_pretrained(str(make_tiny_checkpoint(tmp_path, "stanford", document_length=24)), device="cpu")
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(2, 30)))) + ("." if i % 3 else ", ;")
             for i in range(23)]
    want = enc.encode_documents(texts, bsize=4)
    corpus = PassageCorpus(enc, texts, bsize=5)
    assert corpus.lengths.tolist() == [len(w) for w in want]
    picks = np.array([7, 0, 22, 3])
    got = corpus.encode(picks)
    np.testing.assert_allclose(got, np.concatenate([want[i] for i in picks]), atol=1e-5)
    assert corpus.gather_sample(np.arange(23), 0, 10, None)[0].shape == (10, enc.dim)


@pytest.fixture()
def tiny_rag(tmp_path):
    pytest.importorskip("torch")
    from encoder_fixtures import make_tiny_checkpoint

    ckpt = make_tiny_checkpoint(tmp_path / "ckpt", "stanford", query_length=16, document_length=32)
    return plaidx.RAGPretrainedModel.from_pretrained(str(ckpt), index_root=tmp_path / "indexes", verbose=0)


def rag_texts(n: int = 60) -> list[str]:
    from encoder_fixtures import WORDS

    rng = np.random.default_rng(3)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 20)))) for _ in range(n)]


@pytest.mark.skipif(HAVE_GPU, reason="checks the error of a machine without a usable GPU")
def test_rag_index_on_cuda_without_a_gpu_is_a_clear_error(tiny_rag, tmp_path):
    with pytest.raises(RuntimeError, match="needs a usable CUDA GPU.*Build on the CPU"):
        tiny_rag.index(rag_texts(10), index_name="gpu", device="cuda")
    assert not (tmp_path / "indexes" / "gpu").exists()


def test_rag_index_streams_passages_through_the_device_steps(tiny_rag, monkeypatch):
    """RAGPretrainedModel.index(device=...) builds from a PassageCorpus through BuildOps (here over the CPU
    twin kernels, not a GPU): the same passages, ids and search results as the CPU build."""
    from plaidx.rag import model as rag_model

    texts = rag_texts()
    ids = [f"d{i}" for i in range(len(texts))]
    tiny_rag.index(texts, document_ids=ids, index_name="cpu", split_documents=False)
    want = tiny_rag.search(texts[:5], k=3)
    used = []
    original = rag_model.PassageCorpus.encode
    monkeypatch.setattr(rag_model.PassageCorpus, "encode", lambda self, idx: used.append(len(idx)) or original(self, idx))
    monkeypatch.setattr(rag_model, "resolve_device", lambda device, purpose="search": 0)
    monkeypatch.setattr(index_mod, "build_ops", lambda device: gpu_build.BuildOps(gpu_build.HostKernels(), "twin"))
    tiny_rag.index(texts, document_ids=ids, index_name="dev", split_documents=False, device="twin")
    assert used and max(used) > 1  # encoded in windows by the corpus, not through the spill
    got = tiny_rag.search(texts[:5], k=3)
    assert [[r["document_id"] for r in row] for row in got] == [[r["document_id"] for r in row] for row in want]
    for g, w in zip(got, want):
        np.testing.assert_allclose([r["score"] for r in g], [r["score"] for r in w], atol=1e-3)


@pytest.mark.skipif(HAVE_GPU, reason="checks the error of a machine without a usable GPU")
def test_cli_index_device_without_a_gpu_fails_before_reading_anything(tmp_path, capsys):
    from plaidx.cli.main import main

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"_id": "1", "text": "hello"}\n')
    assert main(["index", str(corpus), str(tmp_path / "ix"), "--device", "cuda"]) != 0
    assert "--device: device='cuda' needs a usable CUDA GPU" in capsys.readouterr().err
    assert main(["index", str(corpus), str(tmp_path / "ix"), "--device", "tpu"]) != 0
    assert "device must be 'cpu', 'cuda' or 'cuda:N'" in capsys.readouterr().err
    assert not (tmp_path / "ix").exists()


class _FakeTensor:
    """What _device_address reads of a torch CUDA tensor (no GPU needed to check its decisions)."""

    def __init__(self, shape, dtype="torch.float32", contiguous=True, index=0):
        self.shape, self.dtype, self._contiguous = shape, dtype, contiguous
        self.device = type("Device", (), {"index": index})()
        self.is_cuda = True

    def is_contiguous(self):
        return self._contiguous

    def data_ptr(self):
        return 4096


def test_only_ready_float32_blocks_on_the_build_device_are_compressed_in_place():
    assert gpu_build._device_address(_FakeTensor((10, 8)), 8, 10, 0) == 4096
    assert gpu_build._device_address(_FakeTensor((10, 8), dtype="torch.float16"), 8, 10, 0) is None
    assert gpu_build._device_address(_FakeTensor((10, 8), contiguous=False), 8, 10, 0) is None
    assert gpu_build._device_address(_FakeTensor((10, 8), index=1), 8, 10, 0) is None  # via the host instead
    with pytest.raises(ValueError, match=r"shape \(9, 8\), expected \(10, 8\)"):
        gpu_build._device_address(_FakeTensor((9, 8)), 8, 10, 0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=60), st.integers(1, 100))
def test_windows_cover_the_documents_in_order_and_close_at_batch_tokens(lengths, batch_tokens):
    corpus = ArrayCorpus([np.zeros((n, 8), np.float32) for n in lengths])
    wins = corpus.windows(np.arange(len(lengths)), batch_tokens)
    np.testing.assert_array_equal(np.concatenate(wins), np.arange(len(lengths)))
    sizes = [int(corpus.lengths[w].sum()) for w in wins]
    assert all(s >= batch_tokens for s in sizes[:-1])  # like batches(): only the last may be short
    assert all(s - int(corpus.lengths[w[-1]]) < batch_tokens for s, w in zip(sizes, wins))  # and no longer than needed
