"""Index build, open, search and reconstruct against exhaustive MaxSim oracles."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from synth import clustered_collection, exact_topk

import plaidx
from plaidx.engine import kernels
from plaidx.errors import IndexFormatError


@pytest.fixture(scope="module")
def collection():
    return clustered_collection(n_docs=300, dim=64, seed=1, noise=0.15)


@pytest.fixture(scope="module")
def built(collection, tmp_path_factory):
    docs, _, _ = collection
    path = tmp_path_factory.mktemp("idx") / "index"
    return plaidx.Index.build(path, docs, nbits=2, seed=0)


def test_build_reports_its_shape(built, collection):
    docs, _, _ = collection
    assert len(built) == len(docs)
    assert built.dim == 64 and built.nbits == 2
    assert built.n_tokens == sum(len(d) for d in docs)
    assert 16 <= built.nlist <= built.n_tokens
    assert built.ids.tolist() == list(range(len(docs)))


def test_full_probe_equals_exhaustive_maxsim_over_decompressed(built, collection):
    docs, queries, _ = collection
    n = len(docs)
    full = plaidx.SearchParams(nprobe=built.nlist, centroid_score_threshold=-1e9, ndocs=n, n_exact=n)
    s_full, i_full = built.search(queries, k=10, params=dataclasses.replace(full, exact_scores="float32"))
    s_ex, i_ex = built.search(queries, k=10, exact=True)
    np.testing.assert_allclose(s_full, s_ex, rtol=1e-5, atol=1e-5)
    assert (i_full == i_ex).mean() > 0.99
    # the int8 exact stage: the same documents but near-ties, scores within int8 rounding
    s_q, i_q = built.search(queries, k=10, params=dataclasses.replace(full, exact_scores="int8"))
    assert not np.array_equal(s_q, s_full)  # (the int8 scores are a different computation)
    np.testing.assert_allclose(s_q, s_full, rtol=0, atol=0.01 * queries.shape[1])
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(i_q, i_full)]) > 0.95
    # and exact mode is MaxSim over the reconstructed documents
    recon = [built.reconstruct(i) for i in range(n)]
    oracle_s, oracle_i = exact_topk(queries, recon, 10)
    np.testing.assert_allclose(s_ex, oracle_s, rtol=1e-4, atol=1e-4)
    assert (i_ex == oracle_i).mean() > 0.99


def test_recall_floor_at_defaults(built, collection):
    docs, queries, _ = collection
    _, truth = exact_topk(queries, docs, 10)
    _, ids = built.search(queries, k=10)
    recall = np.mean([len(set(ids[q]) & set(truth[q])) / 10 for q in range(len(queries))])
    # observed 0.90 (exhaustive MaxSim over the 2-bit index: 0.925); nbits=2, d=64, 300 clustered docs
    assert recall >= 0.85, recall


def test_reconstruct_is_close_to_the_original(built, collection):
    docs, _, _ = collection
    rec = built.reconstruct(7)
    assert rec.shape == docs[7].shape and rec.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rec, axis=1), 1.0, rtol=1e-5)
    cos = (rec * docs[7]).sum(axis=1)
    assert cos.mean() > 0.9


def test_single_query_shape_and_padding(built, collection):
    """A single (q_tokens, d) query is one row: (1, k) results, as for any batch (and as in faiss)."""
    docs, queries, _ = collection
    s, i = built.search(queries[0], k=5)
    assert s.shape == (1, 5) and i.shape == (1, 5) and i.dtype == np.int64 and s.dtype == np.float32
    assert np.all(np.diff(s[0]) <= 0)
    s1, i1 = built.search(queries[:1], k=5)
    np.testing.assert_array_equal(i, i1)
    np.testing.assert_array_equal(s, s1)
    s, i = built.search(queries[:2], k=len(docs) + 5, exact=True)
    assert (i[:, len(docs):] == -1).all() and np.isneginf(s[:, len(docs):]).all()
    assert sorted(i[0, : len(docs)].tolist()) == list(range(len(docs)))


def test_open_round_trip_and_mmap(built, collection):
    _, queries, _ = collection
    again = plaidx.Index.open(built.path)
    assert isinstance(again._snap.a["residuals"], np.memmap)
    a = built.search(queries, k=10)
    b = again.search(queries, k=10)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])


def test_threads_do_not_change_results(built, collection):
    _, queries, _ = collection
    a = built.search(queries, k=10, num_threads=1)
    b = built.search(queries, k=10, num_threads=2)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_doc_ids_filter_returns_only_allowed(built, collection):
    _, queries, _ = collection
    allowed = np.arange(0, 300, 7)
    s, ids = built.search(queries, k=10, doc_ids=allowed)
    assert set(ids.ravel().tolist()) <= set(allowed.tolist())
    assert (ids >= 0).all()  # 43 allowed documents: k=10 always filled
    s_ex, ids_ex = built.search(queries, k=10, doc_ids=allowed, exact=True)
    assert set(ids_ex.ravel().tolist()) <= set(allowed.tolist())


def test_a_filter_allowing_at_most_ndocs_ranks_every_allowed_document(built, collection, monkeypatch):
    """A doc_ids filter allowing no more documents than ndocs makes every allowed document a candidate, without
    probing: with all of them scored exactly, the results are the exhaustive filtered search's, where one probe
    a token misses some. A wider filter, or none, probes as before."""
    from plaidx.engine import kernels

    _, queries, _ = collection
    allowed = np.arange(3, 300, 7)  # 43 documents
    given = []
    search = kernels.search

    def spy(*args, **kwargs):
        given.append(kwargs.get("candidates"))
        return search(*args, **kwargs)

    monkeypatch.setattr(kernels, "search", spy)
    exact = built.search(queries, k=10, doc_ids=allowed, exact=True)
    knobs = dict(nprobe=1, n_exact=43, exact_scores="float32")
    got = built.search(queries, k=10, doc_ids=allowed, params=plaidx.SearchParams(ndocs=43, **knobs))
    assert len(given) == 1 and given[0] is not None
    np.testing.assert_array_equal(built._snap.ids_of(given[0]), allowed)
    np.testing.assert_array_equal(got[1], exact[1])
    np.testing.assert_array_equal(got[0], exact[0])
    given.clear()
    probed = built.search(queries, k=10, doc_ids=allowed, params=plaidx.SearchParams(ndocs=42, **knobs))
    assert given and all(c is None for c in given)
    assert not np.array_equal(probed[1], exact[1])
    given.clear()
    built.search(queries, k=10, params=plaidx.SearchParams(ndocs=300, **knobs))
    assert given == [None]


def test_a_wider_filter_probes_as_many_more_cells_as_it_keeps_out(built, collection, monkeypatch, tmp_path):
    """A filter allowing more than ndocs documents scales the default nprobe by the share it keeps out (at most
    FILTER_PROBE_CAP times), and finds more of the exact filtered top-10 than the unscaled probes. An explicit
    nprobe, or no filter, probes as given."""
    from plaidx.engine import kernels
    from plaidx.engine.params import FILTER_PROBE_CAP

    _, queries, _ = collection
    probes = []
    search = kernels.search

    def spy(*args, **kwargs):
        probes.append(args[11])
        return search(*args, **kwargs)

    monkeypatch.setattr(kernels, "search", spy)
    base = plaidx.SearchParams(ndocs=30).resolve(10, n_tokens=built.n_tokens, nbits=2).nprobe

    def first_probe(params, doc_ids=None):
        probes.clear()
        ids = built.search(queries, k=10, doc_ids=doc_ids, params=params)[1]
        assert probes[0] <= built.nlist
        return probes[0], ids

    def recall(a, b):
        return np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b)])

    quarter = np.arange(0, 300, 4)  # 75 of 300 documents, more than ndocs 30
    nprobe, scaled = first_probe(plaidx.SearchParams(ndocs=30), quarter)
    assert nprobe == 4 * base
    nprobe, given = first_probe(plaidx.SearchParams(ndocs=30, nprobe=base), quarter)
    assert nprobe == base
    exact = built.search(queries, k=10, doc_ids=quarter, exact=True)[1]
    assert recall(scaled, exact) > recall(given, exact)
    assert first_probe(plaidx.SearchParams(ndocs=30))[0] == base
    # 12 of 300 documents over ndocs 10: 25x, capped
    assert first_probe(plaidx.SearchParams(ndocs=10), np.arange(0, 300, 25))[0] == FILTER_PROBE_CAP * base
    # deleted documents are not kept out by the filter: the share is of the live ones
    import shutil

    copy = plaidx.Index.open(shutil.copytree(built.path, tmp_path / "copy"))
    copy.delete(np.arange(2, 300, 4))  # 75 deleted, none of them allowed: 75 of 225 live documents
    probes.clear()
    copy.search(queries, k=10, doc_ids=quarter, params=plaidx.SearchParams(ndocs=30))
    assert probes[0] == 3 * base


def test_nprobe_for_filter_rounds_and_caps():
    from plaidx.engine.params import FILTER_PROBE_CAP, nprobe_for_filter

    assert nprobe_for_filter(2, 5_000, 10_000) == 4
    assert nprobe_for_filter(2, 9_000, 10_000) == 2  # 2.2 rounds down: a filter keeping 10% out costs nothing
    assert nprobe_for_filter(2, 2_000, 10_000) == 10
    assert nprobe_for_filter(8, 100, 1_000_000) == FILTER_PROBE_CAP * 8
    assert nprobe_for_filter(4, 10_000, 10_000) == 4
    assert nprobe_for_filter(4, 0, 10_000) == 4


def test_one_filter_per_query_equals_each_query_filtered_alone(built, collection, monkeypatch):
    """doc_ids as one list per query (lists, a set, an empty list, a 2-D array) filters each query by its own, as
    searching it alone with that list would; queries sharing a filter are searched in one call."""
    from plaidx.engine import kernels

    _, queries, _ = collection
    q = queries[:4]
    filters = [list(range(0, 300, 3)), {5, 6, 7, 8, 200}, [], list(range(0, 300, 3))]
    calls = []
    search = kernels.search

    def spy(*args, **kwargs):
        calls.append(args[0].shape[0])
        return search(*args, **kwargs)

    monkeypatch.setattr(kernels, "search", spy)
    for exact in (False, True):
        s, ids = built.search(q, k=5, doc_ids=filters, exact=exact)
        for i, f in enumerate(filters):
            s1, i1 = built.search(q[i], k=5, doc_ids=sorted(f), exact=exact)
            np.testing.assert_array_equal(ids[i], i1[0])
            np.testing.assert_array_equal(s[i], s1[0])
            assert set(ids[i][ids[i] >= 0].tolist()) <= set(f)
        assert (ids[2] == -1).all() and np.isneginf(s[2]).all()
    calls.clear()
    built.search(q, k=5, doc_ids=filters)
    assert sorted(calls) == [1, 2]  # rows 0 and 3 share their filter; row 2 allows nothing and is not searched
    rows = np.array([[1, 2, 3], [40, 50, 60]])
    np.testing.assert_array_equal(built.search(q[:2], k=3, doc_ids=rows)[1],
                                  built.search(q[:2], k=3, doc_ids=rows.tolist())[1])
    with pytest.raises(ValueError, match="3 lists of ids for 4 queries"):
        built.search(q, k=5, doc_ids=filters[:3])
    with pytest.raises(TypeError, match="mixes document ids and lists"):
        built.search(q[:2], k=5, doc_ids=[1, [2, 3]])
    with pytest.raises(TypeError, match=r"doc_ids\[1\]: document ids must be integers"):
        built.search(q[:2], k=5, doc_ids=[[1], [2.5]])
    with pytest.raises(ValueError, match="got an array of shape"):
        built.search(q[:2], k=5, doc_ids=np.zeros((2, 2, 2), np.int64))
    with pytest.raises(KeyError, match="unknown document ids"):
        built.search(q[:2], k=5, doc_ids=[[1], [100000]])


def test_queries_of_different_lengths_are_searched_as_each_alone(built, collection):
    """A list of query matrices of different lengths (as encoders without query padding give them) is searched
    by length, each query as it would be alone; with one filter per query too."""
    _, queries, _ = collection
    ragged = [queries[0], queries[1][:5], queries[2], queries[3][:3]]
    filters = [[1, 2, 3], list(range(0, 300, 2)), [], list(range(0, 300, 2))]
    for doc_ids in (None, filters, list(range(100))):
        for exact in (False, True):
            s, ids = built.search(ragged, k=5, doc_ids=doc_ids, exact=exact)
            assert s.shape == ids.shape == (4, 5)
            for i, one in enumerate(ragged):
                f = doc_ids[i] if doc_ids is filters else doc_ids
                s1, i1 = built.search(one, k=5, doc_ids=f, exact=exact)
                np.testing.assert_array_equal(ids[i], i1[0])
                np.testing.assert_array_equal(s[i], s1[0])
    with pytest.raises(ValueError, match="dimension 3 does not match"):
        built.search([queries[0], queries[1][:5, :3]], k=5)


def test_zero_padding_rows_never_reach_the_search_and_change_no_score(built, collection, monkeypatch):
    """Query rows of zeros (the padding of encoders without query augmentation) are left out before the kernels
    run: each would add exactly 0 to every score, yet probe the lowest-numbered cells (every cell ties at 0) and
    cost every stage its share. A batch whose queries have different numbers of them is searched by what is
    left, each query as it would be alone without them; a query of zeros only is searched as given."""
    from plaidx.engine import kernels

    _, queries, _ = collection
    padded = np.zeros((3, 12, queries.shape[2]), np.float32)
    padded[0, :8], padded[1, :5], padded[2, 2:9:2] = queries[0][:8], queries[1][:5], queries[2][:4]
    seen = []
    search, exact_search = kernels.search, kernels.exact_search

    def spy(f):
        def run(*args, **kwargs):
            seen.append(args[0].copy())
            return f(*args, **kwargs)
        return run

    monkeypatch.setattr(kernels, "search", spy(search))
    monkeypatch.setattr(kernels, "exact_search", spy(exact_search))
    for exact in (False, True):
        for doc_ids in (None, list(range(0, 300, 2))):
            seen.clear()
            s, ids = built.search(padded, k=5, exact=exact, doc_ids=doc_ids, nprobe=1)
            assert seen and all(q.any(axis=-1).all() for q in seen)
            for i, live in enumerate((queries[0][:8], queries[1][:5], queries[2][:4])):
                s1, i1 = built.search(live, k=5, exact=exact, doc_ids=doc_ids, nprobe=1)
                np.testing.assert_array_equal(ids[i], i1[0])
                np.testing.assert_array_equal(s[i], s1[0])
    s, ids = built.search(np.zeros((4, queries.shape[2]), np.float32), k=5)
    assert ids.shape == (1, 5) and (s[ids >= 0] == 0).all()


def test_empty_doc_ids_allow_no_document(built, collection):
    """doc_ids=[] (a plain list, no dtype) means "no document": every row is padding, for PLAID and exact."""
    _, queries, _ = collection
    for exact in (False, True):
        s, ids = built.search(queries[:3], k=3, doc_ids=[], exact=exact)
        assert ids.shape == s.shape == (3, 3) and ids.dtype == np.int64
        assert (ids == -1).all() and np.isneginf(s).all()


def test_streaming_build_equals_list_build(collection, tmp_path):
    docs, queries, _ = collection
    a = plaidx.Index.build(tmp_path / "a", docs, nbits=2, seed=3)

    def batches():
        for lo in range(0, len(docs), 64):
            yield docs[lo:lo + 64]

    b = plaidx.Index.build(tmp_path / "b", batches(), nbits=2, seed=3)
    np.testing.assert_array_equal(np.asarray(a._snap.a["codes"]), np.asarray(b._snap.a["codes"]))
    np.testing.assert_array_equal(a.search(queries, k=10)[1], b.search(queries, k=10)[1])
    assert not list((tmp_path / "b").glob("*.tmp")) and not list((tmp_path / "b").glob(".*.tmp"))


def test_torch_and_float16_inputs(collection, tmp_path):
    torch = pytest.importorskip("torch")
    docs, queries, _ = collection
    idx = plaidx.Index.build(tmp_path / "t", [torch.from_numpy(d).half() for d in docs[:50]], nbits=4, seed=0)
    s, i = idx.search(torch.from_numpy(queries[:3]), k=3)
    assert i.shape == (3, 3) and (i >= 0).all()


@pytest.mark.parametrize("dim", [64, 96, 128])
@pytest.mark.parametrize("nbits", [1, 2, 4, 8])
def test_every_dim_and_nbits_builds_and_finds_the_source(dim, nbits, tmp_path):
    docs, queries, sources = clustered_collection(n_docs=80, dim=dim, mean_len=20, n_queries=8, seed=dim + nbits)
    idx = plaidx.Index.build(tmp_path / "i", docs, nbits=nbits, seed=0)
    _, ids = idx.search(queries, k=5)
    assert np.mean([sources[q] in ids[q] for q in range(len(queries))]) >= 0.75


def test_maxsim_matches_numpy(collection):
    docs, queries, _ = collection
    got = plaidx.maxsim(queries[0], docs[:20])
    want = np.array([(queries[0] @ d.T).max(axis=1).sum() for d in docs[:20]])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    both = plaidx.maxsim(queries[:2], docs[:20])
    assert both.shape == (2, 20)
    ragged = plaidx.maxsim([queries[0], queries[1][:3], queries[2]], docs[:20])  # queries of different lengths
    np.testing.assert_allclose(ragged, np.stack([plaidx.maxsim(q, docs[:20]) for q in
                                                 (queries[0], queries[1][:3], queries[2])]), rtol=1e-6)


def test_build_info_says_what_it_has():
    info = plaidx.build_info()
    assert info["backend"] in ("native", "reference")
    assert "openmp" in info and "cuda" in info


# ---------------------------------------------------------------- bad input
def test_bad_queries(built):
    q = np.random.default_rng(0).standard_normal((2, 8, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="dimension 32"):
        built.search(q[:, :, :32], k=3)
    with pytest.raises(ValueError, match="NaN"):
        bad = q.copy()
        bad[0, 0, 0] = np.nan
        built.search(bad, k=3)
    with pytest.raises(ValueError, match="no token"):
        built.search(np.zeros((1, 0, 64), np.float32), k=3)
    with pytest.raises(ValueError, match="no query"):
        built.search(np.zeros((0, 8, 64), np.float32), k=3)
    for k in (0, -1):
        with pytest.raises(ValueError, match="k must be"):
            built.search(q, k=k)
    with pytest.raises(TypeError, match="k must be"):
        built.search(q, k=2.5)
    with pytest.raises(KeyError, match="unknown document ids"):
        built.search(q, k=3, doc_ids=[10_000])
    with pytest.raises(ValueError, match="nprobe"):
        built.search(q, k=3, nprobe=0)
    for bad in ("no", 0, 1.0):  # "no" would otherwise count as true and search exhaustively
        with pytest.raises(TypeError, match="exact must be True or False"):
            built.search(q, k=3, exact=bad)
    assert built.search(q, k=3, exact=np.bool_(False))[1].shape == (q.shape[0], 3)


def test_bad_documents_leave_nothing_behind(tmp_path):
    rng = np.random.default_rng(0)
    good = [rng.standard_normal((5, 16)).astype(np.float32) for _ in range(30)]
    cases = [
        ([*good, rng.standard_normal((5, 24)).astype(np.float32)], "dimension 24"),
        ([*good, np.full((3, 16), np.nan, np.float32)], "NaN"),
        ([*good, np.zeros((0, 16), np.float32)], "no token"),
        ([], "empty"),
        ([rng.standard_normal((50, 12)).astype(np.float32)], "multiple of 8"),
    ]
    for docs, msg in cases:
        with pytest.raises(ValueError, match=msg):
            plaidx.Index.build(tmp_path / "x", docs, nlist=16)
        with pytest.raises(IndexFormatError):
            plaidx.Index.open(tmp_path / "x")
        assert not [p for p in (tmp_path / "x").iterdir() if p.name != "LOCK"]
    with pytest.raises(ValueError, match="nbits"):
        plaidx.Index.build(tmp_path / "y", good, nbits=3)
    with pytest.raises(ValueError, match="nlist"):
        plaidx.Index.build(tmp_path / "y", good, nlist=10_000)
    # a failing lazy source leaves no spill copy of what it read; bad metadata fails before any work
    def lazy():
        yield from good
        yield np.full((3, 16), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        plaidx.Index.build(tmp_path / "z", lazy(), nlist=16)
    for bad, msg in (({"norm": np.float32(1.5)}, r"metadata must hold only what JSON stores.*float\(x\)"),
                     ({"tags": {1, 2}}, "metadata must hold only what JSON stores"),
                     ("not-a-dict", "metadata must be a dict")):
        with pytest.raises(TypeError, match=msg):
            plaidx.Index.build(tmp_path / "z", good, nlist=16, metadata=bad)
    assert [p.name for p in (tmp_path / "z").iterdir()] == ["LOCK"]


def test_numpy_integers_are_accepted_and_bad_build_numbers_named(collection, tmp_path):
    """Values from an np.arange sweep work as their ints do; each bad value is named before any work is done."""
    docs, queries, _ = collection
    index = plaidx.Index.build(tmp_path / "np", docs[:80], nbits=np.int64(2), nlist=np.int32(16), seed=np.int64(3),
                               kmeans_niters=np.int64(2), kmeans_sample=np.int64(2000), metadata={"run": 1})
    same = plaidx.Index.build(tmp_path / "py", docs[:80], nbits=2, nlist=16, seed=3, kmeans_niters=2,
                              kmeans_sample=2000)
    assert index.nbits == 2 and json.loads((tmp_path / "np" / "manifest.json").read_text())["nbits"] == 2
    knobs = dict(nprobe=np.int64(4), ndocs=np.int32(64), n_exact=np.int64(16), centroid_score_threshold=np.float32(0.3))
    py = {n: (int(v) if n != "centroid_score_threshold" else float(v)) for n, v in knobs.items()}
    np.testing.assert_array_equal(index.search(queries, k=5, **knobs)[1], same.search(queries, k=5, **py)[1])
    np.testing.assert_array_equal(index.search(queries, k=5, params=plaidx.SearchParams(**knobs))[1],
                                  same.search(queries, k=5, **py)[1])
    index.recluster(nlist=np.int64(8), seed=np.int64(1))
    assert index.nlist == 8
    for kwargs, msg in (({"seed": None}, "seed must be an integer"), ({"seed": -1}, "seed must be"),
                        ({"kmeans_sample": 0}, "kmeans_sample must be a positive"),
                        ({"kmeans_sample": 3.5}, "kmeans_sample must be"), ({"kmeans_niters": 0}, "kmeans_niters"),
                        ({"nbits": np.float64(2)}, "nbits must be one of"), ({"nlist": True}, "nlist must be")):
        with pytest.raises(ValueError, match=msg):
            plaidx.Index.build(tmp_path / "bad", docs[:80], **kwargs)
    with pytest.raises(ValueError, match="nprobe must be a positive integer"):
        index.search(queries, k=5, nprobe=np.float64(4))
    with pytest.raises(ValueError, match="centroid_score_threshold must be a number"):
        index.search(queries, k=5, centroid_score_threshold=np.float32("nan"))


def test_existing_index_is_kept_when_a_rebuild_fails(built, collection, tmp_path):
    docs, queries, _ = collection
    path = tmp_path / "keep"
    idx = plaidx.Index.build(path, docs[:100], nbits=2)
    before = idx.search(queries, k=5)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        plaidx.Index.build(path, docs, nbits=2)
    with pytest.raises(ValueError, match="NaN"):
        plaidx.Index.build(path, [*docs[:50], np.full((2, 64), np.nan, np.float32)], overwrite=True)
    after = plaidx.Index.open(path, verify="full").search(queries, k=5)
    np.testing.assert_array_equal(before[1], after[1])
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a plaidx index"):
        plaidx.Index.build(tmp_path / "foreign", docs[:10])
    assert (tmp_path / "foreign" / "notes.txt").read_text() == "mine"


def test_writes_retire_only_the_index_s_own_files(collection, tmp_path):
    docs, _, _ = collection
    path = tmp_path / "mine"
    idx = plaidx.Index.build(path, docs[:60], nbits=2)
    user = {"my_doc_embeddings.npy": b"embeddings", "ingest-job.tmp": b"job", "codes.npy": b"x", "notes.txt": b"n"}
    for name, data in user.items():
        (path / name).write_bytes(data)
    (path / ".codes.000009.123.tmp").write_bytes(b"stale")  # a crashed writer's temp file is the index's own
    idx.delete([1])
    idx.add(docs[60:70])
    idx.compact()
    assert {n: (path / n).read_bytes() for n in user} == user
    assert not (path / ".codes.000009.123.tmp").exists()
    named = {a["file"] for a in json.loads((path / "manifest.json").read_text())["arrays"].values()}
    assert {p.name for p in path.iterdir()} == named | set(user) | {"LOCK", "manifest.json"}


def test_overwrite_replaces_in_one_commit(collection, tmp_path):
    docs, queries, _ = collection
    path = tmp_path / "ow"
    plaidx.Index.build(path, docs[:60], nbits=2)
    idx = plaidx.Index.build(path, docs[60:200], nbits=4, overwrite=True)
    assert len(idx) == 140 and idx.nbits == 4 and idx.generation == 2
    npy = sorted(p.name for p in path.glob("*.npy"))
    assert all(".000002." in n for n in npy), npy  # the old generation's files are retired


# ---------------------------------------------------------------- on-disk format
def test_unknown_path_and_corruption_are_clear_errors(collection, tmp_path):
    docs, queries, _ = collection
    with pytest.raises(IndexFormatError, match="does not exist"):
        plaidx.Index.open(tmp_path / "nope")
    path = tmp_path / "c"
    plaidx.Index.build(path, docs[:80], nbits=2)
    manifest = json.loads((path / "manifest.json").read_text())

    def restore():
        (path / "manifest.json").write_text(json.dumps(manifest))

    # newer format version
    (path / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(IndexFormatError, match="newer"):
        plaidx.Index.open(path)
    # garbage manifest
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(IndexFormatError, match="not valid JSON"):
        plaidx.Index.open(path)
    restore()
    # flipped byte in a structural array
    codes = path / manifest["arrays"]["codes"]["file"]
    raw = bytearray(codes.read_bytes())
    raw[-3] ^= 0xFF
    original = codes.read_bytes()
    codes.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="checksum"):
        plaidx.Index.open(path)
    codes.write_bytes(original)
    # flipped residual byte: found by verify / full open
    res = path / manifest["arrays"]["residuals"]["file"]
    original_res = res.read_bytes()
    raw = bytearray(original_res)
    raw[-1] ^= 0x01
    res.write_bytes(bytes(raw))
    assert any("checksum" in p for p in plaidx.Index.open(path).verify())
    with pytest.raises(IndexFormatError, match="checksum"):
        plaidx.Index.open(path, verify="full")
    res.write_bytes(original_res)
    # truncated file
    res.write_bytes(original_res[: len(original_res) // 2])
    with pytest.raises(IndexFormatError):
        plaidx.Index.open(path, verify="none")
    res.write_bytes(original_res)
    # missing file
    ids = path / manifest["arrays"]["doc_ids"]["file"]
    ids.rename(tmp_path / "ids.bak")
    with pytest.raises(IndexFormatError, match="missing"):
        plaidx.Index.open(path)
    (tmp_path / "ids.bak").rename(ids)
    assert plaidx.Index.open(path, verify="full").verify() == []


def _build_format_2(path, docs, monkeypatch, **kwargs):
    """Build an index the way format version 2 stored it at nbits 2: int8 centroid rows and scales."""
    from plaidx.engine import build as build_mod
    from plaidx.engine import codec

    def int8_arrays(centroids, nbits, n_tokens=None):
        q, scales = codec.quantize_centroids(centroids)
        return {"centroids": q, "centroid_scales": scales}

    with monkeypatch.context() as m:
        m.setattr(build_mod, "centroid_arrays", int8_arrays)
        index = plaidx.Index.build(path, docs, nbits=2, seed=0, **kwargs)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["format_version"] = 2
    (path / "manifest.json").write_text(json.dumps(manifest))
    return index


def _as_format_1(path):
    """Rewrite an index's current generation the way format version 1 stored it: float16 centroids."""
    manifest = json.loads((path / "manifest.json").read_text())
    arrays = manifest["arrays"]
    c8 = np.load(path / arrays["centroids"]["file"])
    scales = np.load(path / arrays["centroid_scales"]["file"])
    c16 = (c8.astype(np.float32) * scales[:, None]).astype(np.float16)
    name = "centroids.v1.npy"
    np.save(path / name, c16)
    arrays["centroids"] = {"file": name, "dtype": "<f2", "shape": list(c16.shape),
                           "crc32": zlib.crc32((path / name).read_bytes())}
    (path / arrays.pop("centroid_scales")["file"]).unlink()
    manifest["format_version"] = 1
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_format_1_index_opens_searches_and_takes_updates(collection, tmp_path, monkeypatch):
    """Indexes written before int8 centroids (format 1, float16 centroids) keep working unchanged."""
    docs, queries, _ = collection
    path = tmp_path / "v1"
    _build_format_2(path, docs[:120], monkeypatch)
    want = plaidx.Index.open(path).search(queries[:20], k=5)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["arrays"]["centroids"]["dtype"] == "|i1"
    _as_format_1(path)
    old = plaidx.Index.open(path, verify="full")
    assert old.info()["format_version"] == 1
    got = old.search(queries[:20], k=5)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])  # float16 holds the int8 centroids exactly
    new_ids = old.add(docs[120:140])
    assert new_ids.tolist() == list(range(120, 140))
    reopened = plaidx.Index.open(path, verify="full")
    assert len(reopened) == 140 and reopened.verify() == []
    # a centroid table of another dtype, or int8 centroids without their scales, is a clear error
    path2 = tmp_path / "bad"
    plaidx.Index.build(path2, docs[:60], nbits=2, seed=0)
    m = json.loads((path2 / "manifest.json").read_text())
    del m["arrays"]["centroid_scales"]
    (path2 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError, match="centroid_scales"):
        plaidx.Index.open(path2)


def test_codec_from_a_format_1_index_compresses_against_the_stored_centroids(collection, tmp_path, monkeypatch):
    """A format 1 index's float16 centroids are not 4-bit values; reusing them re-rounds them first, so the
    new index's residuals are relative to the centroids it stores."""
    docs, _, _ = collection
    src = tmp_path / "src"
    _build_format_2(src, docs[:120], monkeypatch)
    _as_format_1(src)
    manifest = json.loads((src / "manifest.json").read_text())
    c16 = np.load(src / manifest["arrays"]["centroids"]["file"]).astype(np.float32)
    rng = np.random.default_rng(0)
    c16 = c16 + rng.normal(0, 1e-3, c16.shape).astype(np.float32)  # as an older plaidx rounded them
    np.save(src / manifest["arrays"]["centroids"]["file"], c16.astype(np.float16))
    entry = manifest["arrays"]["centroids"]
    entry["crc32"] = zlib.crc32((src / entry["file"]).read_bytes())
    (src / "manifest.json").write_text(json.dumps(manifest))
    dst = plaidx.Index.build(tmp_path / "dst", docs[120:200], codec_from=src)
    snap = dst._snap
    emb = np.concatenate([np.asarray(d, dtype=np.float32) for d in docs[120:200]])
    codes = np.asarray(snap.a["codes"])
    packed, _ = snap.codec.compress(emb, codes)
    assert np.array_equal(packed, np.asarray(snap.a["residuals"]))
    assert not np.array_equal(snap.codec.centroids, c16.astype(np.float16).astype(np.float32))


def test_centroid_storage_follows_nbits_and_an_overwrite_leaves_no_stale_scales(collection, tmp_path, monkeypatch):
    """4-bit centroid pairs at nbits 1 and 2 from 2**18 tokens (format 3; residuals are taken against them,
    so their error only widens the residuals slightly), int8 rows below; float16 at 4 and 8."""
    from plaidx.engine import codec

    docs, queries, _ = collection
    path = tmp_path / "i"
    cases = ((2, "|u1", 0), (4, "<f2", 0), (1, "|u1", 0), (8, "<f2", 0), (2, "|i1", None), (1, "|i1", None))
    for nbits, dtype, min_tokens in cases:  # None: the real threshold (2**18 tokens): this index keeps int8
        with monkeypatch.context() as m:
            if min_tokens is not None:
                m.setattr(codec, "COMPACT_TABLE_MIN_TOKENS", min_tokens)
            index = plaidx.Index.build(path, docs[:60], nbits=nbits, seed=0, overwrite=True)
        arrays = json.loads((path / "manifest.json").read_text())["arrays"]
        assert arrays["centroids"]["dtype"] == dtype
        assert arrays["centroids"]["shape"][1] == (32 if dtype == "|u1" else 64)
        assert ("centroid_scales" in arrays) == (dtype != "<f2")
        reopened = plaidx.Index.open(path, verify="full")
        assert reopened.nbits == nbits and reopened.verify() == []
        np.testing.assert_array_equal(reopened._snap.codec.centroids, index._snap.codec.centroids)
        # what the residuals were compressed against is what is stored
        codes = np.asarray(reopened._snap.a["codes"])
        emb = np.concatenate([np.asarray(d, dtype=np.float32) for d in docs[:60]])
        packed, _ = reopened._snap.codec.compress(emb, codes)
        assert np.array_equal(packed, np.asarray(reopened._snap.a["residuals"]))


def test_format_2_index_opens_searches_updates_and_reclusters_into_format_3(collection, tmp_path, monkeypatch):
    """An index with int8 centroids (format 2) searches as before, takes adds and deletes next to format 3
    code, and a recluster rewrites it with 4-bit centroids (format 3), keeping every id."""
    docs, queries, _ = collection
    path = tmp_path / "v2"
    before = _build_format_2(path, docs[:120], monkeypatch)
    want = before.search(queries[:20], k=5)
    old = plaidx.Index.open(path, verify="full")
    assert old.info()["format_version"] == 2
    arrays = json.loads((path / "manifest.json").read_text())["arrays"]
    assert arrays["centroids"]["dtype"] == "|i1" and arrays["centroids"]["shape"][1] == 64
    got = old.search(queries[:20], k=5)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    assert old.add(docs[120:150]).tolist() == list(range(120, 150))
    old.delete([3, 121])
    reopened = plaidx.Index.open(path, verify="full")
    assert len(reopened) == 148 and reopened.verify() == []
    # the int8 table is kept for the new documents (they are compressed against it)
    assert json.loads((path / "manifest.json").read_text())["arrays"]["centroids"]["dtype"] == "|i1"
    emb = np.concatenate([np.asarray(d, dtype=np.float32) for d in docs[120:150]])
    snap = reopened._snap
    lo = int(np.asarray(snap.a["doc_offsets"])[120])
    codes = np.asarray(snap.a["codes"][lo:])
    assert np.array_equal(snap.codec.compress(emb, codes)[0], np.asarray(snap.a["residuals"][lo:]))
    from plaidx.engine import codec

    with monkeypatch.context() as m:
        m.setattr(codec, "COMPACT_TABLE_MIN_TOKENS", 0)  # as a collection of 2**18+ tokens would
        reopened.recluster()
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == 3 and manifest["arrays"]["centroids"]["dtype"] == "|u1"
    after = plaidx.Index.open(path, verify="full")
    assert after.verify() == [] and len(after) == 148
    ids = after.search(queries[:20], k=5)[1]
    assert 3 not in ids and 121 not in ids
    exact = after.search(queries[:20], k=5, exact=True)[1]
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ids, exact)]) >= 0.8


def test_short_rows_are_retried_with_more_cells_before_exhaustive_search(built, collection, monkeypatch):
    """One query token probing one cell finds fewer than k documents; the engine widens the probe
    (16x nprobe) instead of scanning every document, and still returns k results."""
    _, queries, _ = collection
    q = np.ascontiguousarray(queries[0][:1])  # (1, d): a single query token
    ivf, ivf_offsets = built._snap.ivf()
    best_cell = int(np.argmax(q[0] @ built._snap.codec.centroids.T))
    k = 30
    assert ivf_offsets[best_cell + 1] - ivf_offsets[best_cell] < k  # nprobe 1 alone finds fewer than k
    from plaidx.engine import kernels

    def no_exhaustive(*args, **kwargs):
        raise AssertionError("exhaustive search used")

    monkeypatch.setattr(kernels, "exact_search", no_exhaustive)
    scores, ids = built.search(q, k=k, nprobe=1)
    scores, ids = scores[0], ids[0]
    assert (ids >= 0).all() and len(set(ids.tolist())) == k
    assert np.all(np.diff(scores) <= 0)


def test_queries_finding_fewer_candidates_than_n_exact_are_searched_again(built, collection, monkeypatch):
    """Above k 10 a query whose probes find fewer candidates than the exact stage scores (n_exact) is searched
    again with 16x the probes: with it and only it, the results are those of the wider search. Up to k 10 only
    a query with fewer than k candidates is."""
    _, queries, _ = collection
    q = np.ascontiguousarray(queries[:12])
    snap = built._snap
    ivf, ivf_offsets = snap.ivf()
    best = np.argmax(q @ snap.codec.centroids.T, axis=2)  # nprobe 1: each query token's best cell
    found = np.array([len(np.unique(np.concatenate([ivf[ivf_offsets[c]:ivf_offsets[c + 1]] for c in row])))
                      for row in best])
    n_exact = int(np.median(found))
    few = found < n_exact
    assert few.any() and not few.all() and found.min() >= 10
    calls = []
    search_cpu = plaidx.Index._search_cpu

    def spy(snap, qs, *args, **kwargs):
        calls.append((args[3], qs.shape[0]))  # nprobe, rows
        return search_cpu(snap, qs, *args, **kwargs)

    monkeypatch.setattr(plaidx.Index, "_search_cpu", staticmethod(spy))
    knobs = dict(nprobe=1, ndocs=len(built), n_exact=n_exact)
    scores, ids = built.search(q, k=20, **knobs)
    assert calls == [(1, len(q)), (16, int(few.sum()))]
    wide_s, wide_i = built.search(q, k=20, **{**knobs, "nprobe": 16})
    np.testing.assert_array_equal(ids[few], wide_i[few])
    np.testing.assert_array_equal(scores[few], wide_s[few])
    assert not np.array_equal(ids[~few], wide_i[~few])  # the others keep their single probe
    calls.clear()
    built.search(q, k=10, **knobs)
    assert calls == [(1, len(q))]


def test_kmeans_option_picks_flat_or_two_level(tmp_path, monkeypatch):
    """kmeans="flat" trains one k-means over the whole sample even where "auto" goes two-level (from
    1024 centroids); the choice is recorded in the manifest, and a wrong value is a clear error that
    leaves nothing behind."""
    from plaidx.engine import clustering

    docs, queries, _ = clustered_collection(n_docs=120, mean_len=40, seed=5)
    calls: list[tuple[str, int]] = []
    real = clustering._kmeans

    def spy(x, k, niters, seed):
        calls.append(("kmeans", k))
        return real(x, k, niters, seed)

    monkeypatch.setattr(clustering, "_kmeans", spy)
    built = {}
    for method in ("auto", "flat"):
        calls.clear()
        index = plaidx.Index.build(tmp_path / method, docs, nlist=1024, kmeans=method, kmeans_niters=1)
        built[method] = [k for _, k in calls]
        assert index._snap.manifest["build"]["kmeans"] == method
        _, ids = index.search(queries, k=5)
        assert (ids >= 0).all()
    assert built["flat"] == [1024]
    assert built["auto"][0] == 32 and len(built["auto"]) > 2 and 1024 not in built["auto"]
    with pytest.raises(ValueError, match="kmeans must be one of"):
        plaidx.Index.build(tmp_path / "bad", docs, kmeans="kmeans++")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="kmeans must be one of"):
        index.recluster(kmeans="two-level")


def test_exact_scores_pick_the_last_stage(built, collection, tmp_path):
    """The default last stage scores the decoded tokens in int8 (the kernels' exact_int8), "float32" as float
    MaxSim over the normalised ones; recall against exhaustive search is the same within 0.02 here. An
    unknown value, or a value with the rerank tier, is a clear error."""
    from plaidx.engine import kernels

    _, queries, _ = collection
    snap, a = built._snap, built._snap.a
    ivf, ivf_offsets = snap.ivf()
    p = plaidx.SearchParams().resolve(10, n_tokens=snap.n_tokens)
    cells = kernels.quantize_rows(snap.codec.centroids)

    def direct(**kw):
        return kernels.search(queries, None, a["codes"], a["residuals"], a["doc_offsets"], ivf, ivf_offsets,
                              snap.codec.centroids, snap.codec.weights, snap.nbits, np.zeros(0, np.uint8), p.nprobe,
                              p.centroid_score_threshold, p.ndocs, p.n_exact, 10, cell_codes=cells, **kw)

    int8 = built.search(queries, k=10, params=plaidx.SearchParams(cell_scores="int8", exact_scores="int8"))
    f32 = built.search(queries, k=10, params=plaidx.SearchParams(cell_scores="int8", exact_scores="float32"))
    for got, want in ((int8, direct(exact_int8=True)), (f32, direct())):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], built.ids[want[1]])
    assert not np.array_equal(int8[0], f32[0])
    _, truth = built.search(queries, k=10, exact=True)
    overlap = [np.mean([len(set(r) & set(t)) / 10 for r, t in zip(ids, truth)]) for ids in (int8[1], f32[1])]
    assert overlap[1] > 0.8 and abs(overlap[0] - overlap[1]) <= 0.02
    with pytest.raises(ValueError, match="exact_scores must be one of"):
        built.search(queries, k=10, params=plaidx.SearchParams(exact_scores="int4"))
    docs, _, _ = collection
    tier = plaidx.Index.build(tmp_path / "tier", docs[:40], nbits=2, nlist=16, keep_vectors="int8")
    with pytest.raises(ValueError, match="exact_scores='float32' has no effect while the rerank tier"):
        tier.search(queries, k=5, params=plaidx.SearchParams(exact_scores="float32"))
    tier.search(queries, k=5, params=plaidx.SearchParams(exact_scores="float32", rerank=0))  # the codes' stage


_DEFAULTS_SCRIPT = """
import sys
import numpy as np
import plaidx
from plaidx.engine import kernels
index, q = plaidx.Index.open(sys.argv[1]), np.load(sys.argv[2])
cells = "int8" if kernels.INT8_VNNI else "float32"
exact = "adc"
s, i = index.search(q, k=10)
s2, i2 = index.search(q, k=10, params=plaidx.SearchParams(cell_scores=cells, exact_scores=exact))
assert np.array_equal(s, s2) and np.array_equal(i, i2), (cells, exact)
print(cells + "/" + exact)
"""


@pytest.mark.skipif(kernels.BACKEND_NAME != "native" or not kernels.INT8_VNNI,
                    reason="needs the native kernels on a CPU with AVX-512 VNNI (the other branch runs in-process)")
def test_unset_scores_follow_the_cpus_int8_kernels(built, collection, tmp_path):
    """cell_scores left None scores in int8 where the int8 kernels run as AVX-512 VNNI, in float32 where they do
    not (their generic copies are slower than float there); exact_scores by the lookup tables on every CPU (faster
    than float there too): checked on this CPU and with the dispatch capped at AVX2 and at the baseline
    (PLAIDX_SIMD), in one subprocess each."""
    _, queries, _ = collection
    np.save(tmp_path / "q.npy", queries)
    for level, want in ((None, "int8/adc"), ("avx2", "float32/adc"), ("baseline", "float32/adc")):
        env = {k: v for k, v in os.environ.items() if k != "PLAIDX_SIMD"}
        if level:
            env["PLAIDX_SIMD"] = level
        out = subprocess.run([sys.executable, "-c", _DEFAULTS_SCRIPT, str(built.path), str(tmp_path / "q.npy")],
                             env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == want


@pytest.mark.skipif(not kernels.INT8_VNNI, reason="on other CPUs every query's unset scores are float32")
def test_queries_past_the_vnni_kernels_score_in_float32(built):
    """The VNNI kernels take up to 256 query tokens; a longer query's unset cell_scores is float32 (the int8
    kernels' generic copies are slower); the lookup stage takes any query length."""
    long = np.random.default_rng(4).standard_normal((2, kernels.VNNI_MAX_QUERY_TOKENS + 1, built.dim))
    long = (long / np.linalg.norm(long, axis=2, keepdims=True)).astype(np.float32)
    f32 = plaidx.SearchParams(cell_scores="float32", exact_scores="adc")
    for want, got in zip(built.search(long, k=5, params=f32), built.search(long, k=5)):
        np.testing.assert_array_equal(got, want)
    short = long[:, :kernels.VNNI_MAX_QUERY_TOKENS]
    int8 = plaidx.SearchParams(cell_scores="int8", exact_scores="adc")
    for want, got in zip(built.search(short, k=5, params=int8), built.search(short, k=5)):
        np.testing.assert_array_equal(got, want)


def test_cell_scores_pick_the_first_stage(built, collection):
    """The default first stage is the int8 one (the kernels' cell_codes), "float32" the float one; both
    reach the same recall here, and an unknown value is a clear error."""
    from plaidx.engine import kernels

    _, queries, _ = collection
    snap, a = built._snap, built._snap.a
    ivf, ivf_offsets = snap.ivf()
    p = plaidx.SearchParams().resolve(10, n_tokens=snap.n_tokens)

    def direct(**kw):
        return kernels.search(queries, None, a["codes"], a["residuals"], a["doc_offsets"], ivf, ivf_offsets,
                              snap.codec.centroids, snap.codec.weights, snap.nbits, np.zeros(0, np.uint8), p.nprobe,
                              p.centroid_score_threshold, p.ndocs, p.n_exact, 10, **kw)

    int8 = built.search(queries, k=10, params=plaidx.SearchParams(cell_scores="int8", exact_scores="float32"))
    f32 = built.search(queries, k=10, params=plaidx.SearchParams(cell_scores="float32", exact_scores="float32"))
    np.testing.assert_array_equal(int8[1], direct(cell_codes=kernels.quantize_rows(snap.codec.centroids))[1])
    np.testing.assert_array_equal(f32[1], direct()[1])
    _, truth = built.search(queries, k=10, exact=True)
    overlap = [np.mean([len(set(r) & set(t)) / 10 for r, t in zip(ids, truth)]) for ids in (int8[1], f32[1])]
    assert overlap[1] > 0.8 and abs(overlap[0] - overlap[1]) <= 0.02
    with pytest.raises(ValueError, match="cell_scores must be one of"):
        built.search(queries, k=10, params=plaidx.SearchParams(cell_scores="bf16"))
