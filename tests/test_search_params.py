"""Search defaults (by k and index size) and the coarse assigner's approximate path."""

from __future__ import annotations

import numpy as np
import pytest
from synth import clustered_collection

import plaidx
from plaidx.engine.clustering import Assigner
from plaidx.engine.params import LARGE_INDEX_TOKENS, NO_PRUNING, SearchParams


def test_defaults_by_k():
    assert SearchParams.for_k(10) == SearchParams(2, NO_PRUNING, 1024, 128)
    assert SearchParams.for_k(100) == SearchParams(8, NO_PRUNING, 4096, 512)  # widened: see the test below
    assert SearchParams.for_k(1000) == SearchParams(64, NO_PRUNING, 8000, 2000)  # see test_deep_k_scores_twice_k_exactly


def test_large_indexes_score_more_candidates_exactly():
    small = SearchParams.for_k(10, n_tokens=LARGE_INDEX_TOKENS - 1)
    large = SearchParams.for_k(10, n_tokens=LARGE_INDEX_TOKENS)
    assert (large.ndocs, large.n_exact) == (4 * small.ndocs, 4 * small.n_exact)
    assert (large.nprobe, large.centroid_score_threshold) == (small.nprobe, small.centroid_score_threshold)


def test_tier_defaults_widen_less_on_large_indexes():
    # the rerank tier scores more candidates than the plain search; on a large index, whose plain ndocs is
    # already 4x, it widens by half as much and probes 4 cells, not 8 (each cell holds more candidates)
    small = SearchParams().resolve(10, n_tokens=LARGE_INDEX_TOKENS - 1, tier=True)
    large = SearchParams().resolve(10, n_tokens=LARGE_INDEX_TOKENS, tier=True)
    assert (small.nprobe, small.ndocs, small.rerank, small.n_exact) == (8, 4096, 512, 512)
    assert (large.nprobe, large.ndocs, large.rerank, large.n_exact) == (4, 8192, 1024, 1024)
    assert SearchParams().resolve(100, n_tokens=LARGE_INDEX_TOKENS, tier=True).nprobe == 4  # the plain value
    assert SearchParams().resolve(1000, n_tokens=LARGE_INDEX_TOKENS, tier=True).nprobe == 8
    # explicit values win either way
    p = SearchParams(nprobe=8, ndocs=16384, rerank=2048).resolve(10, n_tokens=LARGE_INDEX_TOKENS, tier=True)
    assert (p.nprobe, p.ndocs, p.rerank) == (8, 16384, 2048)


def test_the_base_table_is_plaids_shape():
    assert SearchParams.base(10) == SearchParams(2, NO_PRUNING, 1024, 128)
    assert SearchParams.base(100) == SearchParams(4, NO_PRUNING, 2048, 256)
    assert SearchParams.base(1000) == SearchParams(8, NO_PRUNING, 4096, 1000)
    assert SearchParams.base(10, n_tokens=LARGE_INDEX_TOKENS) == SearchParams(2, NO_PRUNING, 4096, 512)
    assert SearchParams.base(100, n_tokens=LARGE_INDEX_TOKENS) == SearchParams(4, NO_PRUNING, 8192, 1024)


def test_k_up_to_100_probes_and_keeps_more_below_4m_tokens():
    # for 10 < k <= 100 the base table's 256 exactly scored candidates leave recall@100 0.06-0.10 below the
    # exhaustive search at nbits 2: twice the probes and candidates at every nbits, below 4M tokens
    for nbits in (1, 2, 4, 8):
        for k in (11, 50, 100):
            assert SearchParams.for_k(k, nbits=nbits) == SearchParams(8, NO_PRUNING, 4096, 512)
        assert SearchParams.for_k(10, nbits=nbits).ndocs < 4096  # k <= 10: not this widening
        assert SearchParams.for_k(101, nbits=nbits).nprobe >= 8
    for nbits in (1, 2):  # from 4M tokens the base table's ndocs is already 4x: unchanged there
        assert SearchParams.for_k(100, n_tokens=LARGE_INDEX_TOKENS, nbits=nbits) == SearchParams.base(
            100, n_tokens=LARGE_INDEX_TOKENS)
    # the rerank tier starts from the base table, not from these wider plain defaults
    for n_tokens in (0, LARGE_INDEX_TOKENS):
        tier = SearchParams().resolve(100, n_tokens=n_tokens, tier=True)
        base = SearchParams.base(100, n_tokens=n_tokens)
        assert tier.ndocs == (4 if n_tokens < LARGE_INDEX_TOKENS else 2) * base.ndocs
    assert (SearchParams().resolve(100, tier=True).nprobe, SearchParams().resolve(100, tier=True).rerank) == (8, 1024)


def test_deep_k_scores_twice_k_exactly():
    # above k 100 (a first stage for a reranker) the base table's n_exact falls to k itself from k 512: every
    # default then scores at least 2k candidates exactly, of at least 8k, at every nbits and size
    for nbits in (1, 2, 4, 8):
        for n_tokens in (0, LARGE_INDEX_TOKENS):
            for k in (101, 300, 512, 1000, 5000):
                p = SearchParams.for_k(k, n_tokens=n_tokens, nbits=nbits)
                assert p.n_exact >= 2 * k and p.ndocs >= 8 * k, (nbits, n_tokens, k, p)
                assert p.nprobe >= SearchParams.base(k, n_tokens=n_tokens).nprobe
    assert SearchParams.base(1000) == SearchParams(8, NO_PRUNING, 4096, 1000)  # the table before: n_exact k
    assert SearchParams.for_k(1000, nbits=4) == SearchParams(64, NO_PRUNING, 8192, 2000)
    assert SearchParams.for_k(600) == SearchParams(64, NO_PRUNING, 4800, 1200)
    assert SearchParams.base(256).n_exact == 512  # already 2k: the floor alone would not change it
    # from 4M tokens the floor is 4k (the base table's n_exact there is 2k from k 1024); probes and ndocs the base's
    large, large_base = (SearchParams.for_k(1000, n_tokens=LARGE_INDEX_TOKENS),
                         SearchParams.base(1000, n_tokens=LARGE_INDEX_TOKENS))
    assert (large.nprobe, large.ndocs, large.n_exact, large_base.n_exact) == (8, 16384, 4000, 2048)
    for k in (101, 300, 1000, 5000):
        assert SearchParams.for_k(k, n_tokens=LARGE_INDEX_TOKENS).n_exact >= 4 * k
    assert SearchParams.for_k(1000, n_tokens=LARGE_INDEX_TOKENS - 1).n_exact == 2000
    assert SearchParams.for_k(1000, ndocs=40000, n_tokens=LARGE_INDEX_TOKENS).n_exact == 5000
    # an explicit ndocs: n_exact follows it, at least 2k and at most ndocs
    assert SearchParams.for_k(1000, ndocs=16000).n_exact == 2000
    assert SearchParams.for_k(1000, ndocs=1500).n_exact == 1500
    assert SearchParams.for_k(100, ndocs=16000).n_exact == 2000  # k <= 100: ndocs // 8 as before
    assert SearchParams.for_k(100, ndocs=400).n_exact == 100


def test_k_up_to_512_probes_and_keeps_twice_the_base_below_4m_tokens():
    # at k 150-500 twice the base's probes and candidates gained recall@k on every collection; from k 700 the
    # doubled probes lost on some, and the deep-k floor works alone
    for nbits in (1, 2, 4, 8):
        for k in (101, 256):
            assert SearchParams.for_k(k, nbits=nbits) == SearchParams(16, NO_PRUNING, 8192, 1024)
        for k in (257, 512):  # and k / 16 probes: test_deep_k_probes_k_over_16_cells
            assert SearchParams.for_k(k, nbits=nbits) == SearchParams(32, NO_PRUNING, 8192, 1024)
    assert SearchParams.for_k(300, n_tokens=LARGE_INDEX_TOKENS) == SearchParams.base(300, n_tokens=LARGE_INDEX_TOKENS)
    tier = SearchParams().resolve(300, tier=True)  # the tier starts from the base table, with the deep-k probes
    assert (tier.nprobe, tier.ndocs, tier.rerank) == (32, 16384, 2048)


def test_deep_k_probes_k_over_16_cells():
    # above k 100, below 4M tokens, at least k / 16 probes a query token, rounded up to a power of two: at k 1000
    # the base table's 8 probes found 1,100-5,300 candidates on average on the synthetic families, against the
    # 2,000 scored exactly
    for nbits in (1, 2, 4, 8):
        for k, nprobe in ((101, 16), (256, 16), (257, 32), (512, 32), (513, 64), (1000, 64), (1024, 64),
                          (1025, 128), (5000, 512)):
            assert SearchParams.for_k(k, nbits=nbits).nprobe == nprobe, (nbits, k)
    for k in (300, 1000, 5000):  # from 4M tokens the probes stay the base's (not measured there)
        assert SearchParams.for_k(k, n_tokens=LARGE_INDEX_TOKENS).nprobe == SearchParams.base(
            k, n_tokens=LARGE_INDEX_TOKENS).nprobe
        assert SearchParams(nprobe=8).resolve(k).nprobe == 8  # an explicit value wins
    # the rerank tier probes as many: with 8, most queries on manytopics found fewer than the 2,048 candidates
    # it re-scores and were searched again (3.8x the p50 of the build before the re-search)
    assert SearchParams().resolve(1000, tier=True).nprobe == 64
    assert SearchParams().resolve(1000, n_tokens=LARGE_INDEX_TOKENS, tier=True).nprobe == 8
    assert SearchParams().resolve(100, tier=True).nprobe == 8


def test_candidates_wanted_is_k_up_to_10_and_n_exact_above():
    assert SearchParams().resolve(10).candidates_wanted(10) == 10
    assert SearchParams(n_exact=500).resolve(10).candidates_wanted(10) == 10
    assert SearchParams().resolve(11).candidates_wanted(11) == 512
    assert SearchParams().resolve(1000).candidates_wanted(1000) == 2000
    assert SearchParams().resolve(100, tier=True).candidates_wanted(100) == 1024  # the tier's rerank
    with pytest.raises(ValueError, match="resolve"):
        SearchParams().candidates_wanted(10)


def test_fine_codes_probe_and_keep_more_candidates():
    # from 4 bits a dimension finding the neighbours limits recall, not the codes' error: twice the probes
    # (four times on a large index) and, below LARGE_INDEX_TOKENS, twice the candidates
    assert SearchParams.for_k(10, nbits=4) == SearchParams(4, NO_PRUNING, 2048, 256)
    assert SearchParams.for_k(10, nbits=8) == SearchParams(4, NO_PRUNING, 2048, 256)
    assert SearchParams.for_k(10, n_tokens=LARGE_INDEX_TOKENS, nbits=4) == SearchParams(8, NO_PRUNING, 4096, 512)
    assert SearchParams.for_k(100, nbits=4) == SearchParams(8, NO_PRUNING, 4096, 512)
    assert SearchParams.for_k(100, n_tokens=LARGE_INDEX_TOKENS, nbits=4) == SearchParams(16, NO_PRUNING, 8192, 1024)
    for nbits in (1, 2):
        for n_tokens in (0, LARGE_INDEX_TOKENS):
            assert SearchParams.for_k(10, n_tokens=n_tokens, nbits=nbits) == SearchParams.base(10, n_tokens=n_tokens)
    assert SearchParams().resolve(10, nbits=4) == SearchParams(4, NO_PRUNING, 2048, 256)
    # explicit values win; n_exact follows an explicit ndocs as before
    assert SearchParams(nprobe=2, ndocs=1024).resolve(10, nbits=4) == SearchParams(2, NO_PRUNING, 1024, 128)
    # the rerank tier scores by its kept vectors, not the codes: its defaults do not follow nbits
    for n_tokens in (0, LARGE_INDEX_TOKENS):
        assert (SearchParams().resolve(10, n_tokens=n_tokens, nbits=4, tier=True)
                == SearchParams().resolve(10, n_tokens=n_tokens, tier=True))


@pytest.fixture(scope="module")
def fine_index(tmp_path_factory):
    docs, queries, _ = clustered_collection(n_docs=400, dim=32, mean_len=24, n_queries=12, q_len=8, seed=5)
    return plaidx.Index.build(tmp_path_factory.mktemp("nb4") / "idx", docs, nbits=4, nlist=64), queries


@pytest.fixture()
def resolved(monkeypatch):
    """The keyword arguments of every SearchParams.resolve call made while the test runs."""
    calls = []
    resolve = SearchParams.resolve

    def spy(self, k, **kw):
        calls.append(kw)
        return resolve(self, k, **kw)

    monkeypatch.setattr(SearchParams, "resolve", spy)
    return calls


def test_an_index_resolves_its_defaults_by_its_nbits(fine_index, resolved):
    index, queries = fine_index
    s0, i0 = index.search(queries, 10)
    assert [kw.get("nbits") for kw in resolved] == [4]
    s1, i1 = index.search(queries, 10, nprobe=4, ndocs=2048, n_exact=256)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(s0, s1)


def test_explicit_values_win_and_n_exact_follows_ndocs():
    p = SearchParams.for_k(10, nprobe=3, centroid_score_threshold=0.1, ndocs=80, n_tokens=LARGE_INDEX_TOKENS)
    assert p == SearchParams(3, 0.1, 80, 10)  # ndocs // 8 = 10, at least k
    assert SearchParams.for_k(5, ndocs=400, n_exact=1000).n_exact == 400  # capped by ndocs
    assert SearchParams.for_k(50, ndocs=10).ndocs == 50  # raised to k


def test_no_centroid_is_pruned_unless_a_threshold_is_given(fine_index):
    """The default threshold prunes nothing at any k, plain or tier: the best n_exact candidates by full centroid
    score go on, whatever ndocs (only the defaults derived from it). A given threshold runs PLAID's pruned pass,
    which keeps the best ndocs by their pruned scores: with every cell pruned they all tie at 0, so the lowest
    document ids survive it."""
    for k in (1, 10, 100, 1000):
        for n_tokens in (0, LARGE_INDEX_TOKENS):
            for tier in (False, True):
                assert SearchParams().resolve(k, n_tokens=n_tokens, tier=tier).centroid_score_threshold == NO_PRUNING
    assert SearchParams(centroid_score_threshold=0.45).resolve(10).centroid_score_threshold == 0.45
    index, queries = fine_index
    every = dict(nprobe=index.nlist, n_exact=4, max_cell_docs=0)  # every document a candidate
    s0, i0 = index.search(queries, 4, params=SearchParams(**every, ndocs=4))
    s1, i1 = index.search(queries, 4, params=SearchParams(**every, ndocs=400))
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(s0, s1)
    _, pruned = index.search(queries, 4, params=SearchParams(**every, ndocs=4, centroid_score_threshold=1e9))
    assert (np.sort(pruned, axis=1) == np.arange(4)).all()
    assert not np.array_equal(np.sort(i0, axis=1), np.sort(pruned, axis=1))


@pytest.mark.parametrize("bad", [dict(nprobe=0), dict(ndocs=-1), dict(n_exact=0), dict(nprobe=True),
                                 dict(centroid_score_threshold=float("nan")), dict(ndocs=2.5)])
def test_bad_values_raise(bad):
    with pytest.raises(ValueError):
        SearchParams.for_k(10, **bad)


@pytest.mark.parametrize("nbits", [3, 0, "4", True, 4.5])
def test_an_unknown_nbits_is_an_error(nbits):
    with pytest.raises(ValueError, match="nbits must be"):
        SearchParams.for_k(10, nbits=nbits)


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("nlist", [64, 4096])
def test_assigner_finds_the_nearest_centroid_or_a_near_one(nlist):
    rng = np.random.default_rng(nlist)
    # k-means centroids of real embeddings are clustered, not isotropic (on the 1M-token benchmark's 8192
    # centroids the inverted file, 8 groups probed, agrees with flat search for 95.5% of tokens; 87.6%
    # on these harder synthetic centroids)
    topics = _unit(rng.standard_normal((64, 32)))
    cents = _unit(topics[rng.integers(0, 64, nlist)] + 0.15 * rng.standard_normal((nlist, 32)).astype(np.float32))
    x = _unit(cents[rng.integers(0, nlist, 3000)] + 0.3 * rng.standard_normal((3000, 32)).astype(np.float32))
    codes = Assigner(cents).assign(x)
    assert codes.dtype == np.uint16 and codes.shape == (3000,)
    sims = x @ cents.T
    best = sims.argmax(axis=1)
    got = sims[np.arange(3000), codes.astype(np.intp)]
    if nlist < 4096:  # flat: exact
        np.testing.assert_array_equal(codes, best)
    else:  # inverted file over the centroids: mostly exact, otherwise close
        assert (codes == best).mean() > 0.85
        assert (sims.max(axis=1) - got).mean() < 0.01
    assert Assigner(cents).assign(np.zeros((0, 32), np.float32)).shape == (0,)


def test_hub_cells_add_no_candidates_past_max_cell_docs(fine_index, monkeypatch, tmp_path):
    """max_cell_docs: None resolves to more than 1/8 of the documents and more than 8 x ndocs (only large
    indexes have such cells); the kernel is given it as max_list; 0 reads every list, as PLAID; bad values are
    named. An index whose every document shares a token cell, and queries with that token: leaving the cell out
    finds the same neighbours through the other probes, and a query of that token alone still gets k results."""
    from plaidx.engine import kernels

    p = SearchParams().resolve(10)
    assert p.max_cell_docs is None and p.cell_docs_limit(400) == 8 * 1024
    assert p.cell_docs_limit(1_000_000) == 125_000
    assert SearchParams(max_cell_docs=0).resolve(10).cell_docs_limit(10**6) == 0
    assert SearchParams(max_cell_docs=np.int64(7)).resolve(10, tier=True).cell_docs_limit(10**6) == 7
    for bad in (-1, 2.5, True, "8", 2**31):
        with pytest.raises(ValueError, match="max_cell_docs must be None"):
            SearchParams(max_cell_docs=bad).resolve(10)
    with pytest.raises(ValueError, match="resolved params"):
        SearchParams().cell_docs_limit(10)

    docs, queries, _ = clustered_collection(n_docs=300, dim=32, mean_len=20, n_queries=12, q_len=8, seed=9)
    hub = np.full(32, 1 / np.sqrt(32), np.float32)
    docs = [np.vstack([hub, d]) for d in docs]  # every document's first token: one shared vector
    index = plaidx.Index.build(tmp_path / "hub", docs, nlist=32)
    seen = []
    search = kernels.search

    def spy(*args, **kwargs):
        seen.append(kwargs.get("max_list", 0))
        return search(*args, **kwargs)

    monkeypatch.setattr(kernels, "search", spy)
    q = np.concatenate([np.broadcast_to(hub, (len(queries), 1, 32)), queries], axis=1)
    every = index.search(q, 10, params=SearchParams(max_cell_docs=0))
    assert seen == [0]
    sizes = np.diff(index._snap.ivf()[1])
    m = int(np.sort(sizes)[-2])  # every list but the hub's
    assert sizes.max() == 300 > m
    hubless = index.search(q, 10, params=SearchParams(max_cell_docs=m))
    assert seen[-1] == m
    exact = index.search(q, 10, exact=True)[1]
    found = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(hubless[1], exact)])
    assert (hubless[1] >= 0).all() and found >= 0.7, found
    np.testing.assert_array_equal(hubless[1], every[1])  # here the other probes find what the hub's list did
    seen.clear()
    index.search(q, 10)
    assert seen == [8 * 1024]
    only_hub = index.search(np.broadcast_to(hub, (1, 1, 32)).copy(), 10, params=SearchParams(max_cell_docs=m))
    assert (only_hub[1] >= 0).all()  # its one probe adds nothing: searched again wider, then exhaustively


def test_the_tier_re_scores_as_many_tokens_on_short_documents(fine_index, resolved):
    """The tier's default rerank (ndocs // 8) is for documents of about TIER_DOC_TOKENS tokens; shorter ones get
    that many more re-scored (the same token budget), at most TIER_MAX_SHORT_FACTOR times more and at most ndocs;
    an explicit rerank and the plain search are left alone, and an index passes its mean document length."""
    from plaidx.engine.params import TIER_DOC_TOKENS, TIER_MAX_SHORT_FACTOR

    def rerank(doc_tokens, **kw):
        return SearchParams(**kw).resolve(10, tier=True, doc_tokens=doc_tokens)

    assert (TIER_DOC_TOKENS, TIER_MAX_SHORT_FACTOR) == (100, 4)
    assert [rerank(t).rerank for t in (0, 100, 240, 50, 40, 25, 10.3, 1)] == [512, 512, 512, 1024, 1280, 2048, 2048,
                                                                             2048]
    assert rerank(10, ndocs=1024).ndocs == 1024 and rerank(10, ndocs=1024).rerank == 512
    assert rerank(10, rerank=300).rerank == 300
    assert SearchParams().resolve(10, doc_tokens=10) == SearchParams().resolve(10)
    index, queries = fine_index
    resolved.clear()
    index.search(queries, 10)
    assert [kw.get("doc_tokens") for kw in resolved] == [pytest.approx(index.n_tokens / len(index))]
