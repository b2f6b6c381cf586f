"""More than 65536 centroids: uint32 codes (format 4) through build, search, updates and the rerank tier."""

from __future__ import annotations

import json

import numpy as np
import pytest

import plaidx
from plaidx import SearchParams
from plaidx.engine import build as build_mod
from plaidx.engine import clustering, gpu, storage
from plaidx.errors import IndexFormatError

D = 16
NLIST = (1 << 16) + 1  # the smallest nlist that needs 4-byte codes


def _docs(seed: int, n_docs: int, lo: int = 60, hi: int = 80) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(n), D)).astype(np.float32) for n in rng.integers(lo, hi + 1, n_docs)]


def _sample_rows(sample, nlist, niters, seed, verbose=False, method="auto", **_):
    rows = sample[np.random.default_rng(seed).choice(sample.shape[0], nlist, replace=False)]
    return np.ascontiguousarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


def _patch_clustering(mp: pytest.MonkeyPatch) -> None:
    """k-means replaced by unit sample rows, so that a build with 65537 centroids takes seconds. What is
    under test is the width of what gets stored and read, not where the centroids land
    (test_more_than_65536_centroids_with_real_kmeans runs the real steps)."""
    mp.setattr(build_mod, "train_centroids", _sample_rows)


@pytest.fixture
def fast_clustering(monkeypatch):
    _patch_clustering(monkeypatch)


def _build_wide(path, seed: int = 0, **kwargs) -> tuple[plaidx.Index, list[np.ndarray], np.ndarray]:
    docs = _docs(seed, 1000)  # about 70,000 tokens
    index = plaidx.Index.build(path, docs, nbits=2, nlist=NLIST, kmeans_niters=1, **kwargs)
    queries = np.random.default_rng(seed + 1).standard_normal((4, 8, D)).astype(np.float32)
    return index, docs, queries


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A wide index the tests only read."""
    with pytest.MonkeyPatch.context() as mp:
        _patch_clustering(mp)
        return _build_wide(tmp_path_factory.mktemp("wide") / "wide")


def _manifest(index: plaidx.Index) -> dict:
    return json.loads((index.path / "manifest.json").read_text())


def _decoded_maxsim(index: plaidx.Index, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nq, live docs) exhaustive MaxSim over every live document's decompressed tokens, and their ids."""
    ids = np.asarray(index.ids)
    scores = np.zeros((queries.shape[0], ids.size), np.float64)
    for j, doc_id in enumerate(ids):
        v = index.reconstruct(int(doc_id)).astype(np.float64)
        scores[:, j] = (queries.astype(np.float64) @ v.T).max(axis=2).sum(axis=1)
    return scores, ids


def _assert_wide(index: plaidx.Index) -> None:
    m = _manifest(index)
    assert m["format_version"] == storage.WIDE_CODES_FORMAT_VERSION == 4
    assert m["build"]["format_version"] == 4  # what the build wrote, recorded with its statistics
    assert m["arrays"]["codes"]["dtype"] == "<u4" and index.nlist == NLIST
    assert np.asarray(index._snap.a["codes"]).dtype == np.uint32
    assert index.verify() == []


def test_a_wide_pq_index_is_format_5_with_uint32_codes(fast_clustering, tmp_path):
    """uint32 codes and the pq codec together: format 5 (the newer of the two), both read back, and the
    exhaustive search is MaxSim over the decoded tokens."""
    index, docs, queries = _build_wide(tmp_path / "wide-pq", residual_codec="pq")
    m = _manifest(index)
    assert m["format_version"] == storage.PQ_FORMAT_VERSION and m["arrays"]["codes"]["dtype"] == "<u4"
    assert index.residual_codec == "pq" and index.verify() == []
    truth, ids = _decoded_maxsim(index, queries)
    scores, got = index.search(queries, k=10, exact=True)
    np.testing.assert_array_equal(got, ids[np.argsort(-truth, axis=1, kind="stable")[:, :10]])
    assert (index.search(queries, k=10)[1] >= 0).all()


def test_wide_index_stores_uint32_codes_and_searches_exactly(wide):
    index, docs, queries = wide
    _assert_wide(index)
    codes = np.asarray(index._snap.a["codes"])
    assert codes.max() >= 1 << 16  # ids a uint16 could not hold are in use
    assert index._snap.doc_cells()[0].dtype == np.uint32
    truth, ids = _decoded_maxsim(index, queries)
    want = ids[np.argsort(-truth, axis=1, kind="stable")[:, :10]]
    scores, got = index.search(queries, k=10, exact=True)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(scores, np.take_along_axis(truth, np.argsort(-truth, axis=1)[:, :10], 1), rtol=1e-5)
    # PLAID with every cell probed and every candidate kept is the exhaustive search
    full = SearchParams(nprobe=NLIST, centroid_score_threshold=-9.0, ndocs=10_000, n_exact=10_000,
                        exact_scores="float32")
    np.testing.assert_array_equal(index.search(queries, k=10, params=full)[1], want)
    # the default PLAID search returns MaxSim scores of real documents: exact with the float last stage, to
    # int8 rounding with the default one
    col = {int(d): j for j, d in enumerate(ids)}
    for params, tol in ((SearchParams(exact_scores="float32"), dict(rtol=1e-5)), (None, dict(atol=0.05))):
        s, i = index.search(queries, k=10, params=params)
        for q in range(queries.shape[0]):
            assert (i[q] >= 0).all()
            np.testing.assert_allclose(s[q], truth[q, [col[int(d)] for d in i[q]]], **tol)


def test_wide_index_updates_keep_uint32_codes(tmp_path, fast_clustering):
    index, docs, queries = _build_wide(tmp_path / "updates", seed=10)
    new = index.add(_docs(2, 30))
    assert new.tolist() == list(range(1000, 1030))
    _assert_wide(index)
    # an added document is found as itself: its own tokens as the query
    one = np.ascontiguousarray(index.reconstruct(1005)[None, :8])
    assert index.search(one, k=1, exact=True)[1][0, 0] == 1005
    index.delete([3, 500, 1001])
    _assert_wide(index)
    before = index.search(queries, k=5, exact=True)
    assert index.compact() == 3
    _assert_wide(index)
    after = index.search(queries, k=5, exact=True)
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[0], before[0])
    reopened = plaidx.Index.open(index.path, verify="full")
    _assert_wide(reopened)
    np.testing.assert_array_equal(reopened.search(queries, k=5, exact=True)[1], before[1])
    index.recluster(nlist=NLIST, kmeans_niters=1)
    _assert_wide(index)
    assert sorted(np.asarray(index.ids).tolist()) == sorted(set(range(1030)) - {3, 500, 1001})
    truth, ids = _decoded_maxsim(index, queries)
    np.testing.assert_array_equal(index.search(queries, k=5, exact=True)[1],
                                  ids[np.argsort(-truth, axis=1, kind="stable")[:, :5]])


def test_wide_index_with_a_rerank_tier(tmp_path, fast_clustering):
    index, docs, queries = _build_wide(tmp_path / "tier", seed=3, keep_vectors="int8")
    _assert_wide(index)
    kept = np.concatenate(docs).astype(np.float64)  # the tier keeps the vectors as given
    offs = np.cumsum([0] + [len(d) for d in docs])
    truth = np.stack([(queries.astype(np.float64) @ kept[offs[i]:offs[i + 1]].T).max(axis=2).sum(axis=1)
                      for i in range(len(docs))], axis=1)
    s, i = index.search(queries, k=5, rerank=200)
    for q in range(queries.shape[0]):  # re-scored with the kept (int8) vectors: close to float MaxSim
        np.testing.assert_allclose(s[q], truth[q, i[q]], rtol=0.02)
    np.testing.assert_array_equal(index.search(queries, k=5, exact=True)[1],
                                  np.argsort(-truth, axis=1, kind="stable")[:, :5])


def test_indexes_up_to_65536_centroids_keep_uint16_codes_and_format_3(tmp_path):
    index = plaidx.Index.build(tmp_path / "narrow", _docs(5, 60, 5, 20), nbits=2, nlist=64, kmeans_niters=1)
    m = _manifest(index)
    assert m["format_version"] == 3 and m["arrays"]["codes"]["dtype"] == "<u2"
    assert m["build"]["format_version"] == 3
    assert index._snap.doc_cells()[0].dtype == np.uint16
    index.add(_docs(6, 5, 5, 20))
    m = _manifest(index)
    assert m["format_version"] == 3 and m["arrays"]["codes"]["dtype"] == "<u2"


def test_a_reader_before_format_4_refuses_a_wide_index(wide, monkeypatch):
    index, _, _ = wide
    monkeypatch.setattr(storage, "NEWEST_FORMAT_VERSION", 3)  # what plaidx read before uint32 codes
    with pytest.raises(IndexFormatError, match="format version 4 is newer than this plaidx supports"):
        plaidx.Index.open(index.path)


@pytest.mark.parametrize("dtype, nlist, version", [("<u4", 100, 4), ("<u2", NLIST, 4), ("<u4", NLIST, 3),
                                                   ("<i4", 100, 3)])
def test_codes_of_the_wrong_width_are_refused(dtype, nlist, version):
    m = {"format": "plaidx-index", "format_version": version, "generation": 1, "dim": 16, "nbits": 2, "nlist": nlist,
         "n_docs": 1, "n_tokens": 3, "next_id": 1,
         "arrays": {"codes": {"file": "codes.000001.npy", "dtype": dtype, "shape": [3], "crc32": 0}}}
    with pytest.raises(IndexFormatError, match="codes must be uint16"):
        storage.validate_manifest(m)


def test_nlist_errors_name_the_limit(tmp_path):
    docs = _docs(7, 10, 5, 10)
    with pytest.raises(ValueError, match="exceeds the number of token embeddings"):
        plaidx.Index.build(tmp_path / "a", docs, nlist=1000)
    with pytest.raises(ValueError, match=str(clustering.MAX_NLIST)):
        plaidx.Index.build(tmp_path / "b", docs, nlist=clustering.MAX_NLIST + 1)


def test_cuda_on_a_wide_index_is_a_clear_error(wide, tmp_path):
    """The CUDA kernels read uint16 codes: asking for them above 65536 centroids names the limit and the way
    out, before any device is looked for (so it holds on machines without a GPU too)."""
    index, docs, queries = wide
    with pytest.raises(ValueError, match="at most 65536 centroids .*device='cpu'"):
        index.search(queries, k=5, device="cuda")
    with pytest.raises(ValueError, match="at most 65536 centroids .*nlist <= 65536"):
        plaidx.Index.build(tmp_path / "gpu", docs[:10], nlist=NLIST, device="cuda:0")
    gpu.check_codes_fit("cuda", 1 << 16)  # at the limit: fine
    gpu.check_codes_fit("cpu", NLIST)


def test_more_than_65536_centroids_with_real_kmeans(tmp_path):
    """The real two-level k-means (its grouped Lloyd refinement) and the grouped assigner at nlist 65537."""
    docs = _docs(8, 1000)
    index = plaidx.Index.build(tmp_path / "real", docs, nbits=2, nlist=NLIST, kmeans_niters=1)
    _assert_wide(index)
    assigner = clustering.Assigner(index._snap.codec.centroids)
    assert assigner.index is None and assigner.assign(docs[0]).dtype == np.uint32  # the grouped kernel
    queries = np.random.default_rng(9).standard_normal((3, 8, D)).astype(np.float32)
    truth, ids = _decoded_maxsim(index, queries)
    np.testing.assert_array_equal(index.search(queries, k=5, exact=True)[1],
                                  ids[np.argsort(-truth, axis=1, kind="stable")[:, :5]])
