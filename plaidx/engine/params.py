"""PLAID search parameters: per-call values with defaults chosen by k, never stored as hidden state."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields, replace
from typing import Any, Optional

import numpy as np

LARGE_INDEX_TOKENS = 1 << 22  # about 4M token embeddings
CELL_SCORES = (None, "int8", "float32")  # SearchParams.cell_scores (None: the search picks by CPU and device)
EXACT_SCORES = (None, "adc", "int8", "float32")  # SearchParams.exact_scores (the same)
TIER_MIN_NPROBE = 8  # the rerank tier's defaults (SearchParams.resolve with tier=True)
TIER_NDOCS_FACTOR = 4
TIER_MIN_NPROBE_LARGE = 4  # ... from LARGE_INDEX_TOKENS, where the base ndocs is already 4x larger
TIER_NDOCS_FACTOR_LARGE = 2
TIER_DOC_TOKENS = 100  # the tier's default rerank (ndocs // 8) assumes documents of about this many tokens ...
TIER_MAX_SHORT_FACTOR = 4  # ... and shorter ones get proportionally more re-scored, at most this many times more
NO_PRUNING = float("-inf")  # the default centroid_score_threshold: no cell pruned (SearchParams)
FINE_NBITS = 4  # from 4 bits a dimension the plain search probes and keeps more candidates (SearchParams.for_k)
DEEP_K = 100  # above this k the plain search scores at least 2k candidates exactly (4k from LARGE_INDEX_TOKENS), of
# at least 8k (SearchParams.for_k)
WIDE_K = 512  # below LARGE_INDEX_TOKENS, for 10 < k <= WIDE_K the plain search probes and keeps twice the base's
DEEP_K_PER_PROBE = 16  # ... and above DEEP_K it probes at least k / 16 cells a token (a power of two)
FEW_K = 10  # up to this k a query is searched again when it finds fewer than k candidates; above, fewer than n_exact
MAX_KNOB = (1 << 31) - 1  # the largest nprobe, ndocs, n_exact or rerank: past any index's cells and documents
FILTER_PROBE_CAP = 16  # a doc_ids filter multiplies the default nprobe by at most this (nprobe_for_filter)
HUB_SHARE = 8  # a probed cell listing more than 1/HUB_SHARE of the documents ...
HUB_NDOCS = 8  # ... and more than HUB_NDOCS times ndocs is a hub: it adds no candidates (SearchParams.max_cell_docs)


def is_integer(value: Any) -> bool:
    """An int or numpy integer (the values of an ``np.arange`` sweep), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """An int, float or numpy number that is not NaN, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and value == value


def rerank_count(value: Any) -> int | None:
    """``rerank`` as given (None), or as a non-negative int; a ValueError saying what to pass otherwise."""
    if value is None:
        return None
    if not is_integer(value) or not 0 <= value <= MAX_KNOB:
        raise ValueError(f"rerank must be None (the default), 0 (no re-scoring) or a positive number of candidates, "
                         f"got {value!r}")
    return int(value)


@dataclass(frozen=True)
class SearchParams:
    """The knobs of one PLAID search; a field left None takes its default for k and the index size.

    Attributes
    ----------
    nprobe : int or None
        Cells probed per query token (PLAID's ncells).
    centroid_score_threshold : float or None
        Centroids whose best query-token score is below this are pruned in the first candidate pass, which
        keeps the best ``ndocs`` candidates by their pruned centroid scores (Stanford PLAID's step; it uses 0.4
        to 0.5). None: ``NO_PRUNING`` (-inf): no centroid is pruned, and the candidates are ranked by their
        full centroid scores alone, in one pass. The pruned pass only skips the score rows of pruned cells,
        while it still reads every candidate token's cell and adds a second pass over the best ``ndocs``; on
        our kernels it saved no time, and it ranked no better. Without it the plain defaults took 0.86-0.99x the
        p50 (paired, against the build before, alternating query by query) with recall@10 equal or up to
        +0.004 on the five synthetic families, hubs, three real sets, Tatoeba, the short synthetic set and the
        10M synthetic collection, and the int8 tier 0.80-1.02x with recall@10 equal or up to +0.004 (1.01-1.02x
        on CISI and Cranfield, whose candidates never outnumber ndocs: the same code ran;
        benchmarks/results/ab_no_pruning_plain.md, ab_no_pruning_tier.md). Scratch runs found the same at 8 and
        32 probes (about 10x ``ndocs`` candidates; 0.86-1.00x), at k 100 and at k 1000. A value reproduces
        PLAID's pruned pass.
    ndocs : int or None
        Candidates kept after the pruned centroid interaction (rescored without pruning). Without pruning
        (the default threshold) the best ``n_exact`` of them are the best ``n_exact`` of all candidates, so
        ndocs then sets the defaults that derive from it: ``n_exact``, the tier's ``rerank`` and
        ``max_cell_docs``.
    n_exact : int or None
        Candidates whose residuals are decompressed for exact MaxSim (default ndocs // 8, at least k, and at
        least 2k above k 100, 4k from ``LARGE_INDEX_TOKENS`` tokens; PLAID uses ndocs // 4, which costs twice the
        exact stage for about +0.01 recall@10 in our measurements).
        Not with the rerank tier, which scores ``rerank`` candidates by their kept vectors instead.
    rerank : int or None
        On an index built with ``keep_vectors``: how many of the centroid stage's best candidates are scored
        by MaxSim over their kept vectors, in place of the n_exact decompressed ones (None: ndocs // 8 there,
        with the tier's wider defaults for nprobe and ndocs; 0: no tier, PLAID over the codes). None
        elsewhere (a positive value there is an error).
    cell_scores : "int8", "float32" or None
        How the first stage scores query tokens against the centroids. ``"int8"``: int8 dot products
        (exact integers, scaled back; about 4x fewer instructions on AVX-512 VNNI CPUs, within 0.002
        recall@10 of float32 on our collections). ``"float32"``: float dot products, as Stanford PLAID and
        earlier plaidx releases (to reproduce their candidates exactly). None: ``"int8"`` on a GPU and on
        CPUs with AVX-512 VNNI (``plaidx.engine.kernels.INT8_VNNI``) for queries of up to 256 tokens,
        ``"float32"`` otherwise, where the int8 kernels are slower. Passed through :meth:`resolve` unchanged.
    exact_scores : "adc", "int8", "float32" or None
        How the last stage scores the ``n_exact`` candidates. ``"adc"``: without decompressing them, by table
        lookups over their codes (asymmetric distance computation): each query token's dot product with
        every codeword in a per-query int8 table, summed over a token's packed bytes, plus the first stage's
        cell score, times the token's inverse norm (derived for each document the first time a search scores
        it, up to 2 bytes per token in memory). It takes 0.40-0.68x the time of ``"int8"`` on AVX-512 CPUs and 0.23-0.30x that of
        ``"float32"`` on AVX2 ones, recall@10 within 0.002 of both on our collections
        (benchmarks/results/search_stages_families.md, search_stages_families_avx2.md). ``"int8"``: each
        decoded token quantised to int8 as its unit vector, against the int8 query (the scoring of the int8
        rerank tier). ``"float32"``: float
        MaxSim over the normalised decoded tokens, as Stanford PLAID and earlier plaidx releases. None:
        ``"adc"`` on the CPU, ``"float32"`` on a GPU (``"adc"`` and ``"int8"`` are CPU-only).
        The exhaustive ``exact=True`` search is always float32. Not with the rerank tier, whose kept vectors
        score the candidates instead. Passed through :meth:`resolve` unchanged.
    max_cell_docs : int or None
        A probed cell whose list holds more documents than this adds none of them to the candidates: a hub, the
        cell of a token nearly every document has (a [CLS] or marker token, a stopword), whose list would flood
        the centroid stage with documents that only share that token. They stay candidates through the other
        cells the query probes, and every cell's score still counts for every candidate. None: more than
        1/``HUB_SHARE`` (1/8) of the index's documents and more than ``HUB_NDOCS`` (8) times ``ndocs``
        (:meth:`cell_docs_limit`), which only large indexes reach. On Tatoeba (69,241 sentences of about 10
        tokens, the default model) 278 of 300 queries probed the [CLS] cell, which lists 52% of the documents:
        leaving it out took the default search from 2.65 to 1.17 ms at -0.002 recall@10, and the int8 tier's
        recall@10 from 0.957 to 0.966 (scratch runs; the run with everything in place is
        benchmarks/results/families_heldout.md). 0: no limit, every probed list is read, as Stanford PLAID
        does. Passed through :meth:`resolve` unchanged.

    ``SearchParams(nprobe=4)`` overrides one knob; :meth:`resolve` fills in the others.
    """

    nprobe: Optional[int] = None
    centroid_score_threshold: Optional[float] = None
    ndocs: Optional[int] = None
    n_exact: Optional[int] = None
    rerank: Optional[int] = None
    cell_scores: Optional[str] = None
    exact_scores: Optional[str] = None
    max_cell_docs: Optional[int] = None

    @classmethod
    def of_call(cls, params: Any, nprobe: Any = None, centroid_score_threshold: Any = None, ndocs: Any = None,
                n_exact: Any = None, rerank: Any = None) -> SearchParams:
        """The knobs of one search call: ``params`` (a SearchParams) or the knobs given one by one, not both."""
        knobs = cls(nprobe, centroid_score_threshold, ndocs, n_exact, rerank)
        if params is None:
            return knobs
        if not isinstance(params, SearchParams):
            raise TypeError(f"params must be a plaidx.SearchParams, got {type(params).__name__}")
        if not knobs.is_default():
            raise TypeError("give the search knobs either as params=SearchParams(...) or one by one, not both")
        return params

    def candidates_wanted(self, k: int) -> int:
        """How many candidates the probes of one query should find; :meth:`plaidx.Index.search` searches a query
        that found fewer again, probing 16x more cells (then exhaustively, if it still has fewer than k).

        k up to ``FEW_K`` (10): k. Above: ``n_exact`` (resolved; the rerank tier's ``rerank``), the candidates the
        exact stage scores: with fewer, that stage scores all the query found, and recall@k is what those few
        cells hold. At k 1000 and nbits 2, 8 probes a token found 1,100-3,900 candidates on average on the five
        synthetic families (as few as 11), against the 2,000 scored exactly. With this rule and the deep-k probes
        of :meth:`for_k`, recall@1000 gains +0.010 to +0.130 on the five families, three real sets and the 1M
        synthetic collection for 0.85-1.42x the p50, recall@300 up to +0.034 and recall@100 up to +0.019
        (benchmarks/results/ab_probe_again_k*.md). At k up to 10 the base table's n_exact (128) would send 2-27% of
        the queries of the five families through a second search for at most +0.006 recall@10 (+0.026 on
        manytopics) at up to 1.27x the p50 (a scratch run): there only a query with fewer than k candidates is
        searched again, as before.
        """
        if self.n_exact is None:
            raise ValueError("candidates_wanted needs resolved params: call resolve(k, ...) first")
        return k if k <= FEW_K else max(k, self.n_exact)

    def cell_docs_limit(self, n_docs: int) -> int:
        """The resolved ``max_cell_docs`` for an index of ``n_docs`` documents (0: no limit); needs resolved params."""
        if self.max_cell_docs is not None:
            return self.max_cell_docs
        if self.ndocs is None:
            raise ValueError("cell_docs_limit needs resolved params: call resolve(k, ...) first")
        return max(n_docs // HUB_SHARE, HUB_NDOCS * self.ndocs)

    def is_default(self) -> bool:
        """True when no knob is set (every value comes from the defaults)."""
        return all(getattr(self, f.name) is None for f in fields(self))

    def resolve(self, k: int, *, n_tokens: int = 0, nbits: int = 2, tier: bool = False,
                doc_tokens: float = 0.0) -> SearchParams:
        """These knobs with every unset one at its default for ``k``, ``n_tokens`` and ``nbits``.

        ``tier``: the search scores its candidates with the kept vectors of the rerank tier (an index built
        with ``keep_vectors``, ``rerank`` not 0). Its int8 MaxSim costs a fraction of decompressing, so the
        tier's defaults look wider for the same latency: nprobe at least 8, ndocs 4x, and ``rerank``
        ndocs // 8 (k <= 10: nprobe 8, ndocs 4096, rerank 512; recall@10 0.982-0.998 on seven of our eight
        collections at 0.56-1.65x the p50 of the plain defaults, benchmarks/results/families_families.md and
        families_real.md). From ``LARGE_INDEX_TOKENS`` tokens, where the plain ndocs is already 4x larger,
        nprobe at least 4 and ndocs 2x (k <= 10: nprobe 4, ndocs 8192, rerank 1024): each probed cell
        brings more candidates there: 8 probes with 16,384 candidates cost 1.47-1.65x the plain search at 10M
        and 32M tokens for +0.005-0.008 recall@10, these defaults 1.13-1.26x, 2 probes 1.11-1.14x for
        -0.003-0.005 (benchmarks/results/rerank_synthetic_*_tierscale.md). The resolved ``n_exact`` is then
        ``rerank``: the candidates scored last. The tier's defaults start from :meth:`base`, not from the plain
        defaults, and do not depend on ``nbits``: its kept vectors, not the codes, score the candidates. Above
        ``DEEP_K`` they take the plain search's deep-k probes (:meth:`for_k`): at k 1000 with 8 probes most
        queries on manytopics found fewer candidates than the 2,048 re-scored and were searched again
        (:meth:`candidates_wanted`); 64 gave the same recall@1000 (0.471) in 0.46x the p50, and 0.891 against
        0.886 in 0.56x on the 1M synthetic collection (scratch runs).

        ``doc_tokens``: the index's mean tokens per document (0: unknown). The tier's default ``rerank`` is for
        documents of about ``TIER_DOC_TOKENS`` (100) tokens; on shorter ones it re-scores ``TIER_DOC_TOKENS /
        doc_tokens`` times more of them, the same token budget, but at most ``TIER_MAX_SHORT_FACTOR`` (4) times
        more, and at most ndocs. Re-scoring costs by the token (about 27 ns a kept token at d 384 on two threads,
        plus about 2-5 tokens' worth a document: 0.41 us a document of 10 tokens, 2.7 us one of 100, when 20,480
        tokens are scored), but recall stops growing first. ``rerank`` 1024 / 1536 / 2048 (this rule) reached
        recall@10 0.976 / 0.978 / 0.979 on Tatoeba (sentences of 10.3 tokens; 4096 gave 0.975 against 0.975 at
        2048 before the candidates were ranked without pruning), 0.973 / 0.977 / 0.980 on the short synthetic set
        (12.8 tokens), and on two families held out of this choice with documents of 12 tokens 0.961 / 0.967 /
        0.973 (fewtopics) and 0.978 / 0.981 / 0.982 (lowrank): a factor of 3 would leave fewtopics below 0.97
        (scratch runs, each setting interleaved query by query with the plain defaults, at b1a5b5b;
        benchmarks/results/families_heldout.md, engine_synthetic_80000_short.md and the ``*-len12`` heldout
        reports have the defaults against PLAID).
        """
        if self.cell_scores not in CELL_SCORES:
            raise ValueError(f"cell_scores must be one of {', '.join(map(repr, CELL_SCORES))}, got {self.cell_scores!r}")
        if self.exact_scores not in EXACT_SCORES:
            raise ValueError(f"exact_scores must be one of {', '.join(map(repr, EXACT_SCORES))}, got "
                             f"{self.exact_scores!r}")
        if self.max_cell_docs is not None and not (is_integer(self.max_cell_docs) and 0 <= self.max_cell_docs <= MAX_KNOB):
            raise ValueError(f"max_cell_docs must be None (the default), 0 (no limit) or a positive number of "
                             f"documents up to {MAX_KNOB}, got {self.max_cell_docs!r}")
        hubs = None if self.max_cell_docs is None else int(self.max_cell_docs)
        if not tier:
            return replace(SearchParams.for_k(k, self.nprobe, self.centroid_score_threshold, self.ndocs, self.n_exact,
                                              n_tokens=n_tokens, nbits=nbits), rerank=self.rerank, cell_scores=self.cell_scores,
                           exact_scores=self.exact_scores, max_cell_docs=hubs)
        if self.exact_scores is not None:
            raise ValueError(f"exact_scores={self.exact_scores!r} has no effect while the rerank tier scores the "
                             "candidates by their kept vectors: drop it, or set rerank=0 to score n_exact candidates "
                             "by their codes")
        if self.n_exact is not None:
            raise ValueError(f"n_exact={self.n_exact!r} has no effect while the rerank tier scores the candidates: "
                             "the best `rerank` candidates of the centroid stage are scored by their kept vectors. "
                             "Set rerank= instead, or rerank=0 to score n_exact candidates by their codes")
        base = SearchParams.base(k, n_tokens=n_tokens)
        large = n_tokens >= LARGE_INDEX_TOKENS
        min_nprobe, factor = (TIER_MIN_NPROBE_LARGE, TIER_NDOCS_FACTOR_LARGE) if large else (TIER_MIN_NPROBE,
                                                                                           TIER_NDOCS_FACTOR)
        nprobe = max(min_nprobe, base.nprobe, _deep_nprobe(k, n_tokens)) if self.nprobe is None else self.nprobe
        ndocs = factor * base.ndocs if self.ndocs is None else self.ndocs
        p = SearchParams.for_k(k, nprobe, self.centroid_score_threshold, ndocs, n_tokens=n_tokens)
        given = rerank_count(self.rerank)
        if given == 0:
            raise ValueError("rerank=0 turns the tier off: resolve it with tier=False")
        if given is None:
            given = p.ndocs // 8
            if 0 < doc_tokens < TIER_DOC_TOKENS:
                given = min(p.ndocs, int(given * min(TIER_MAX_SHORT_FACTOR, TIER_DOC_TOKENS / doc_tokens)))
        rerank = max(k, given)
        return replace(p, ndocs=max(p.ndocs, rerank), n_exact=rerank, rerank=rerank, cell_scores=self.cell_scores,
                       max_cell_docs=hubs)

    @classmethod
    def base(cls, k: int, *, n_tokens: int = 0) -> SearchParams:
        """The table the defaults start from, before :meth:`for_k` widens them by nbits and k.

        Stanford PLAID's shape by k (k <= 10: nprobe 2, ndocs 1024; k <= 100: 4, 2048; above: 8, max(4k,
        4096)), ndocs four times larger from ``LARGE_INDEX_TOKENS`` tokens, n_exact ndocs // 8 and at least k,
        and no centroid pruned (``NO_PRUNING``; until this release 0.4, 0.35 above k 100).
        These were the plain defaults at every nbits until the nbits and k widenings; the rerank tier's defaults
        derive from them (:meth:`resolve`).
        """
        dp, dt, dn = _base(k, n_tokens)
        return cls.for_k(k, dp, dt, dn, max(k, dn // 8), n_tokens=n_tokens)

    @classmethod
    def for_k(cls, k: int, nprobe: int | None = None, centroid_score_threshold: float | None = None,
              ndocs: int | None = None, n_exact: int | None = None, *, n_tokens: int = 0,
              nbits: int = 2) -> SearchParams:
        """Defaults chosen by k, the index size and its bits a dimension, each overridable.

        From ``LARGE_INDEX_TOKENS`` tokens on, the default ``ndocs`` (and with it ``n_exact``) is four
        times larger: with more documents per cell the centroid scores rank the candidates less well,
        and at 10M tokens scoring 512 instead of 128 documents exactly lifts recall@10 from 0.73 to
        0.78 (benchmarks/results/search_params_synthetic_100000.md) while staying well under 20 ms.

        For 10 < k <= ``WIDE_K`` (512) below ``LARGE_INDEX_TOKENS`` tokens ``nprobe`` and ``ndocs`` are doubled
        at every nbits (k <= 100: nprobe 8, ndocs 4096, n_exact 512; above: nprobe 16, ndocs 8192, n_exact 1024,
        and from k 257 the deep-k probes below, 32).
        At k 100 and nbits 2 the base table's 256 exactly scored candidates left recall@100 0.06-0.10 below the
        exhaustive figure on the synthetic collections; the wider search gains +0.037 to +0.055 there (+0.126 on
        manytopics) and +0.005 to +0.017 on three real sets, reaching their exhaustive figure, for 1.16-1.54x the
        p50 (benchmarks/results/defaults_nbits2_k100.md; nbits 1: defaults_nbits1_k100.md). At k 200 and nbits 2
        it gains +0.011 to +0.164 recall@200 on the five families, SciFact and the 1M synthetic collection, for
        1.16-1.65x (at k 500 +0.127 to +0.169 with the floor below; at nbits 1 +0.004 to +0.139;
        defaults_nbits2_wide_k.md, defaults_nbits1_wide_k.md). Above ``WIDE_K`` the deep-k probes below take over.
        (A scratch sweep had 16 probes lose up to 0.028 at k 700 and 1000 on four of those collections against 8:
        at 8 more queries found fewer than k candidates and were searched again with 128.)
        From ``LARGE_INDEX_TOKENS`` tokens the base ndocs is already 4x, and the gain at k 100 and nbits 2 was
        +0.008-0.009 for 1.24-1.33x: unchanged there.

        For k > ``DEEP_K`` (100), a first stage for a reranker, the default ``n_exact`` is at least 2k and
        ``ndocs`` at least 8k, at every nbits and size: with the base table's n_exact of k (k >= 512 below 4M
        tokens) recall@k is whatever the centroid stage's own top k holds. At k 1000 and nbits 2 the floor gains
        +0.089 to +0.153 recall@1000 on four synthetic families, SciFact and the 1M synthetic collection (+0.078
        on manytopics) for 1.15-1.61x the p50 (defaults_nbits2_deep_k.md, defaults_nbits4_deep_k.md, whose k 300
        rows predate the ``WIDE_K`` doubling). From ``LARGE_INDEX_TOKENS`` tokens the floor is 4k: there the
        base table's n_exact is 2k from k 1024 on, no longer more than the small index's as below, and 4k gained
        +0.042 recall@1000 at 10M tokens and nbits 2, +0.072 at nbits 4 and +0.046 at 32M tokens and nbits 4, for
        1.48x, 1.79x and 1.31x the p50 (ab_deep_exact_large.md). An explicit ``ndocs`` with ``n_exact`` unset
        gives n_exact max(2k, ndocs // 8) (4k from that size), at most ndocs. Below ``LARGE_INDEX_TOKENS`` tokens it also probes at least k / 16
        cells a token, rounded up to a power of two (``DEEP_K_PER_PROBE``; k 257-512: 32, k 513-1024: 64): the
        candidates must outnumber the 2k scored exactly (see :meth:`candidates_wanted`, whose re-search also
        covers the queries these probes leave short).

        From ``FINE_NBITS`` bits a dimension the codes rank close candidates well enough that finding them is
        what limits recall: ``nprobe`` is doubled (four times from ``LARGE_INDEX_TOKENS`` tokens, where each
        token's neighbours spread over more, smaller cells) and below that size ``ndocs`` too (k <= 10: nprobe
        4, ndocs 2048, n_exact 256; from 4M tokens nprobe 8, ndocs 4096, n_exact 512). On nbits-4 indexes that
        gains +0.014 to +0.072 recall@10 on the synthetic families at 1M tokens and +0.016 to +0.060 at 10M to
        100M, for 1.17-1.64x the p50; at most 0.003 on three real sets already near the exhaustive figure, for
        1.46-1.72x (defaults_nbits4_families.md, defaults_nbits4_scale.md). At nbits 2 and k <= 10 the same
        widths gain less (+0.007 to +0.014 on four families, +0.086 on manytopics; defaults_sweep_families.md) and
        would take the defaults past a third of Stanford PLAID's p50 on manytopics.
        """
        if not is_integer(nbits) or nbits not in (1, 2, 4, 8):
            raise ValueError(f"nbits must be the index's bits a dimension, 1, 2, 4 or 8, got {nbits!r}")
        dp, dt, dn = _base(k, n_tokens)
        large, fine = n_tokens >= LARGE_INDEX_TOKENS, nbits >= FINE_NBITS
        if not large and (fine or 10 < k <= WIDE_K):
            dp, dn = 2 * dp, 2 * dn
        elif fine:
            dp *= 4
        if k > DEEP_K:
            dn = max(dn, 8 * k)
        dp = max(dp, _deep_nprobe(k, n_tokens))
        nprobe = dp if nprobe is None else nprobe
        centroid_score_threshold = dt if centroid_score_threshold is None else centroid_score_threshold
        ndocs = dn if ndocs is None else ndocs
        for name, v in (("nprobe", nprobe), ("ndocs", ndocs)):
            if not is_integer(v) or not 0 < v <= MAX_KNOB:
                raise ValueError(f"{name} must be a positive integer up to {MAX_KNOB}, got {v!r}")
        if not is_real(centroid_score_threshold):
            raise ValueError(f"centroid_score_threshold must be a number, got {centroid_score_threshold!r}")
        ndocs = max(ndocs, k)
        if n_exact is None:
            n_exact = max((4 if large else 2) * k if k > DEEP_K else k, ndocs // 8)
        if not is_integer(n_exact) or not 0 < n_exact <= MAX_KNOB:
            raise ValueError(f"n_exact must be a positive integer up to {MAX_KNOB}, got {n_exact!r}")
        return cls(int(nprobe), float(centroid_score_threshold), int(ndocs), int(min(max(n_exact, k), ndocs)))


def _base(k: int, n_tokens: int) -> tuple[int, float, int]:
    """nprobe, centroid_score_threshold and ndocs of :meth:`SearchParams.base`."""
    if k <= 10:
        dp, dn = 2, 1024
    elif k <= 100:
        dp, dn = 4, 2048
    else:
        dp, dn = 8, max(4 * k, 4096)
    return dp, NO_PRUNING, 4 * dn if n_tokens >= LARGE_INDEX_TOKENS else dn


def nprobe_for_filter(nprobe: int, n_allowed: int, n_live: int) -> int:
    """The default ``nprobe`` of a search filtered to ``n_allowed`` of ``n_live`` documents (more than ``ndocs``).

    The probes of a filtered query find only the allowed documents in the probed cells, about
    ``n_allowed / n_live`` of what they find unfiltered, and its true neighbours lie that much farther out among
    the allowed ones. So the default nprobe is scaled by ``n_live / n_allowed`` (rounded, at most
    ``FILTER_PROBE_CAP`` times): the centroid stage then ranks about as many candidates as an unfiltered search
    does. At k 10 and nbits 2 this gave recall@10 +0.009 to +0.193 at a 20% filter of the five 1M-token families
    (manytopics the most) for 1.08-1.42x the p50, +0.003 to +0.067 at 50% for 1.03-1.18x, and +0.042 at a 5%
    filter of 10M tokens for 1.23x; at k 100 +0.023 at 20% of 10M tokens, and -0.004 to +0.016 at 50% of the
    1M-token families (benchmarks/results/ab_filter_wide_*.md). An explicit nprobe is used as given.
    """
    if n_allowed <= 0 or n_allowed >= n_live:
        return nprobe
    return int(min(FILTER_PROBE_CAP * nprobe, max(nprobe, round(nprobe * n_live / n_allowed))))


def _deep_nprobe(k: int, n_tokens: int) -> int:
    """The deep-k probes (:meth:`SearchParams.for_k`): above DEEP_K below LARGE_INDEX_TOKENS tokens, k /
    DEEP_K_PER_PROBE rounded up to a power of two; 0 elsewhere."""
    if k <= DEEP_K or n_tokens >= LARGE_INDEX_TOKENS:
        return 0
    return 1 << (-(-k // DEEP_K_PER_PROBE) - 1).bit_length()
