"""The rerank tier: kept vectors stored beside the codes, maintained by updates, and used to re-score."""

from __future__ import annotations

import gc

import numpy as np
import psutil
import pytest
from synth import clustered_collection, exact_topk
from test_pagein import evict

import plaidx
from plaidx.engine.vectors import quantize_int8
from plaidx.errors import IndexFormatError


@pytest.fixture(scope="module")
def data():
    return clustered_collection(n_docs=240, dim=32, mean_len=24, n_queries=12, seed=7)


def _recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / truth.shape[1] for a, b in zip(ids, truth)]))


def _kept_docs(index: plaidx.Index) -> dict[int, np.ndarray]:
    """id -> float32 kept vectors of every live document (read straight from the tier)."""
    snap = index._snap
    offs = np.asarray(snap.a["doc_offsets"])
    return {int(i): snap.kept.rows(slice(int(offs[p]), int(offs[p + 1])))
            for i, p in zip(index.ids, snap.positions(index.ids, live_only=True, what="test"))}


def test_int8_quantization_is_within_half_a_step_and_idempotent():
    x = np.random.default_rng(0).standard_normal((50, 32)).astype(np.float32)
    q, s = quantize_int8(x)
    assert q.dtype == np.int8 and s.shape == (50,) and np.abs(q).max() == 127
    back = q.astype(np.float32) * s[:, None]
    assert np.all(np.abs(back - x) <= s[:, None] / 2 * (1 + 1e-5))
    q2, s2 = quantize_int8(back)
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_allclose(s2, s, rtol=1e-6)


@pytest.mark.parametrize("kind", ["int8", "float16"])
def test_build_keeps_every_token_and_reranked_scores_are_maxsim_over_them(data, tmp_path, kind):
    docs, queries, _ = data
    index = plaidx.Index.build(tmp_path / "ix", docs, nbits=2, seed=0, keep_vectors=kind)
    assert index.keep_vectors == kind and index.info()["keep_vectors"] == kind
    kept = _kept_docs(index)
    for i, d in enumerate(docs):
        tol = (np.abs(d).max(axis=1, keepdims=True) / 127 / 2 + 1e-6) if kind == "int8" else 1e-3
        assert np.all(np.abs(kept[i] - d) <= tol)
    scores, ids = index.search(queries, k=10)
    for row in range(len(queries)):
        for s, i in zip(scores[row], ids[row]):
            expect = float((queries[row] @ kept[int(i)].T).max(axis=1).sum())
            if kind == "int8":  # the query quantised too: integer dot products, scaled back (cellq.kept_maxsim)
                assert s == _int8_maxsim(queries[row], docs[int(i)])
                assert s == pytest.approx(expect, rel=2e-3, abs=2e-3)
            else:
                assert s == pytest.approx(expect, rel=1e-5, abs=1e-5)
        assert np.all(np.diff(scores[row]) <= 0)


def _int8_maxsim(q: np.ndarray, doc: np.ndarray) -> np.float32:
    """The int8 tier's score of a document (its float vectors doc) from the definition, in integers."""
    qq, qs = quantize_int8(q)
    dq, ds = quantize_int8(doc)
    dots = (qq.astype(np.int64) @ dq.astype(np.int64).T).astype(np.float32)
    total = np.float32(0)
    for v in ((dots * ds[None, :]) * qs[:, None]).max(axis=1):
        total = np.float32(total + v)
    return total


def test_rerank_lifts_recall_against_exact_maxsim(data, tmp_path):
    docs, queries, _ = data
    index = plaidx.Index.build(tmp_path / "ix", docs, nbits=1, seed=0, keep_vectors="int8")
    _, truth = exact_topk(queries, docs, 10)
    _, plain = index.search(queries, k=10, rerank=0)
    _, default = index.search(queries, k=10)
    n = len(docs)  # every document a candidate: only the int8 rounding is left between the tier and exact
    _, wide = index.search(queries, k=10, params=plaidx.SearchParams(nprobe=index.nlist, ndocs=n,
                                                                     centroid_score_threshold=-1e9, rerank=n))
    r_plain, r_default, r_wide = _recall(plain, truth), _recall(default, truth), _recall(wide, truth)
    # observed: 0.65 without the tier, 0.967 with its defaults
    assert r_default >= r_plain + 0.2
    assert r_wide >= 0.97  # observed 0.975: at d 32 the quantised query costs this (d 128-384: within 0.003)


def test_exact_search_runs_over_the_kept_vectors(data, tmp_path):
    docs, queries, _ = data
    index = plaidx.Index.build(tmp_path / "ix", docs, nbits=1, seed=0, keep_vectors="float16")
    truth_s, truth = exact_topk(queries, docs, 10)
    scores, ids = index.search(queries, k=10, exact=True)
    np.testing.assert_allclose(scores, truth_s, rtol=2e-3, atol=2e-3)
    assert _recall(ids, truth) >= 0.99
    # rerank=0 is the codes' exhaustive search: the 1-bit codec's ceiling, well below the tier's
    _, codes_only = index.search(queries, k=10, exact=True, rerank=0)
    assert _recall(codes_only, truth) < _recall(ids, truth)


def test_exact_search_over_int8_vectors_is_the_tiers_score_of_every_document(data, tmp_path):
    docs, queries, _ = data
    index = plaidx.Index.build(tmp_path / "ix", docs, nbits=2, seed=0, keep_vectors="int8")
    scores, ids = index.search(queries, k=10, exact=True)
    for row in range(len(queries)):
        every = np.array([_int8_maxsim(queries[row], d) for d in docs], np.float32)
        want = np.lexsort((np.arange(len(docs)), -every))[:10]
        np.testing.assert_array_equal(ids[row], want)
        np.testing.assert_array_equal(scores[row], every[want])


def test_filters_and_deletes_apply_to_the_reranked_results(data, tmp_path):
    docs, queries, _ = data
    index = plaidx.Index.build(tmp_path / "ix", docs, nbits=2, seed=0, keep_vectors="int8")
    allowed = np.arange(0, 240, 7)
    scores, ids = index.search(queries, k=10, doc_ids=allowed)
    assert set(ids[ids >= 0].tolist()) <= set(allowed.tolist())
    # 35 documents, fewer than ndocs and rerank: every one is a candidate and re-scored, even at one probe a
    # token, so the results are the exhaustive search's over the kept vectors
    scores, ids = index.search(queries, k=10, doc_ids=allowed, nprobe=1)
    ex_scores, ex_ids = index.search(queries, k=10, doc_ids=allowed, exact=True)
    np.testing.assert_array_equal(ids, ex_ids)
    np.testing.assert_array_equal(scores, ex_scores)
    _, before = index.search(queries, k=10)
    index.delete(before[:, 0])
    _, after = index.search(queries, k=10)
    assert not set(after.ravel().tolist()) & set(before[:, 0].tolist())
    _, ex = index.search(queries, k=10, exact=True)
    assert not set(ex.ravel().tolist()) & set(before[:, 0].tolist())


def test_add_delete_compact_keep_the_tier_like_a_fresh_build(data, tmp_path):
    docs, queries, _ = data
    index = plaidx.Index.build(tmp_path / "ix", docs[:160], nbits=2, seed=0, keep_vectors="int8")
    index.add(docs[160:])
    gone = list(range(0, 240, 3))
    index.delete(gone)
    index.compact()
    live = [i for i in range(240) if i not in set(gone)]
    assert index.ids.tolist() == live and index.keep_vectors == "int8"
    kept = _kept_docs(index)
    for i in live:
        q, s = quantize_int8(docs[i])
        np.testing.assert_array_equal(kept[i], q.astype(np.float32) * s[:, None])
    fresh = plaidx.Index.build(tmp_path / "fresh", [docs[i] for i in live], codec_from=index, keep_vectors="int8")
    s_upd, i_upd = index.search(queries, k=10)
    s_new, i_new = fresh.search(queries, k=10)
    np.testing.assert_allclose(s_upd, s_new, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(i_upd, np.array(live)[i_new])
    assert index.verify() == []


def test_recluster_keeps_the_kept_vectors_and_encodes_from_them(data, tmp_path):
    docs, queries, _ = data
    index = plaidx.Index.build(tmp_path / "ix", docs, nbits=2, seed=0, keep_vectors="int8")
    index.delete([3, 4, 5])
    before = _kept_docs(index)
    index.recluster(nlist=32, seed=1)
    after = _kept_docs(index)
    assert index.keep_vectors == "int8" and index.nlist == 32 and sorted(after) == sorted(before)
    for i in before:
        np.testing.assert_allclose(after[i], before[i], rtol=1e-6, atol=0)
    # the new codes were made from the kept vectors, not from the decompressed codes ...
    from_kept = plaidx.Index.build(tmp_path / "kept", [after[i] for i in index.ids], codec_from=index)
    np.testing.assert_array_equal(np.asarray(from_kept._snap.a["codes"]), np.asarray(index._snap.a["codes"]))
    # ... so they are nearly those of the original embeddings (observed: 8 of 5575 tokens differ)
    orig = plaidx.Index.build(tmp_path / "orig", [docs[i] for i in index.ids], codec_from=index)
    assert np.mean(np.asarray(orig._snap.a["codes"]) != np.asarray(index._snap.a["codes"])) < 0.01


def test_an_overwrite_without_keep_vectors_drops_the_tier(data, tmp_path):
    docs, queries, _ = data
    plaidx.Index.build(tmp_path / "ix", docs, nbits=2, keep_vectors="float16")
    index = plaidx.Index.build(tmp_path / "ix", docs, nbits=2, overwrite=True)
    assert index.keep_vectors is None and index.info()["keep_vectors"] is None
    assert not list((tmp_path / "ix").glob("vector*"))
    assert plaidx.Index.open(tmp_path / "ix").keep_vectors is None


def test_bad_keep_vectors_and_rerank_are_clear_errors(data, tmp_path):
    docs, queries, _ = data
    for bad in ("int4", "INT8", True, 8):
        with pytest.raises(ValueError, match=r"keep_vectors must be None \(no rerank tier\), 'int8'"):
            plaidx.Index.build(tmp_path / "bad", docs, keep_vectors=bad)
    assert not (tmp_path / "bad" / "manifest.json").exists()
    plain = plaidx.Index.build(tmp_path / "plain", docs, nbits=2)
    with pytest.raises(ValueError, match=r"rebuild it with Index.build\(\.\.\., keep_vectors='int8'\)"):
        plain.search(queries, k=10, rerank=50)
    with pytest.raises(ValueError, match="keep_vectors"):
        plain.search(queries, k=10, params=plaidx.SearchParams(rerank=50))
    plain.search(queries, k=10, rerank=0)  # explicit "no re-scoring" is fine anywhere
    kept = plaidx.Index.build(tmp_path / "kept", docs, nbits=2, keep_vectors="int8")
    for bad in (-1, 2.5, True, "64"):
        with pytest.raises(ValueError, match="rerank must be"):
            kept.search(queries, k=10, rerank=bad)
    with pytest.raises(TypeError, match="not both"):
        kept.search(queries, k=10, rerank=5, params=plaidx.SearchParams(nprobe=2))
    with pytest.raises(ValueError, match=r"n_exact=64 has no effect.*rerank=0"):
        kept.search(queries, k=10, n_exact=64)
    kept.search(queries, k=10, n_exact=64, rerank=0)  # PLAID over the codes: n_exact applies


def test_an_int8_tier_above_the_int8_kernels_dimension_is_refused_before_the_build(tmp_path):
    rng = np.random.default_rng(0)
    wide = [rng.standard_normal((12, 1032)).astype(np.float32) for _ in range(40)]
    with pytest.raises(ValueError, match=r"keep_vectors='int8' needs d <= 1024.*d 1032: keep 'float16'"):
        plaidx.Index.build(tmp_path / "wide", wide, nlist=8, keep_vectors="int8")
    assert [p.name for p in (tmp_path / "wide").iterdir()] == ["LOCK"]
    index = plaidx.Index.build(tmp_path / "wide", wide, nlist=8, keep_vectors="float16")
    source = plaidx.Index.build(tmp_path / "plain", wide, nlist=8)
    with pytest.raises(ValueError, match="needs d <= 1024"):  # the same with another index's codec
        plaidx.Index.build(tmp_path / "copy", wide, codec_from=source, keep_vectors="int8")
    assert index.search(wide[3][:4], k=1)[1][0, 0] == 3


def test_a_corrupt_or_missing_vector_file_is_reported_with_the_fix(data, tmp_path):
    docs, queries, _ = data
    path = tmp_path / "ix"
    index = plaidx.Index.build(path, docs, nbits=2, keep_vectors="int8")
    vec = next(path.glob("vectors.*.npy"))
    raw = bytearray(vec.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    vec.write_bytes(bytes(raw))
    problems = index.verify()
    assert len(problems) == 1 and vec.name in problems[0] and "drop_vectors" in problems[0]
    with pytest.raises(IndexFormatError, match="drop_vectors"):
        plaidx.Index.open(path, verify="full")
    vec.write_bytes(bytes(raw[: len(raw) // 3]))  # truncated
    with pytest.raises(IndexFormatError, match=r"truncated.*backup or rebuild it.*drop_vectors"):
        plaidx.Index.open(path)
    vec.unlink()
    with pytest.raises(IndexFormatError, match=r"missing.*drop_vectors"):
        plaidx.Index.open(path)
    with pytest.raises(IndexFormatError, match="no index at"):
        plaidx.Index.drop_vectors(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()  # a wrong path is not created
    repaired = plaidx.Index.drop_vectors(path)
    assert repaired.keep_vectors is None and repaired.verify() == [] and len(repaired) == len(docs)
    _, ids = repaired.search(queries, k=10)
    _, want = plaidx.Index.build(tmp_path / "plain", docs, nbits=2).search(queries, k=10)
    np.testing.assert_array_equal(ids, want)


def test_opening_pages_in_no_kept_vector_and_a_search_only_its_candidates_rows(tmp_path):
    rng = np.random.default_rng(3)
    docs = [rng.standard_normal((100, 128)).astype(np.float32) for _ in range(1500)]  # 150k tokens, 19 MB int8
    queries = rng.standard_normal((2, 16, 128)).astype(np.float32)
    for name, kind in (("plain", None), ("kept", "int8")):
        plaidx.Index.build(tmp_path / name, docs, nbits=2, nlist=256, kmeans_niters=2, keep_vectors=kind)
    del docs
    # out of the page cache, so that what a search pages in shows in the map
    evict(next((tmp_path / "kept").glob("vectors.*.npy")))
    proc = psutil.Process()

    def open_growth(name: str) -> tuple[int, plaidx.Index]:
        gc.collect()
        rss = proc.memory_info().rss
        index = plaidx.Index.open(tmp_path / name)
        return proc.memory_info().rss - rss, index

    plain, _ = open_growth("plain")
    kept, index = open_growth("kept")
    vec_bytes = index._snap.kept.vectors.nbytes
    assert kept - plain < vec_bytes // 8, (kept, plain, vec_bytes)  # observed: 0.3 MB more, of 19 MB
    rerank = 16
    _, ids = index.search(queries, k=10, rerank=rerank)
    assert (ids >= 0).all()
    # the search reads its candidates' rows through the map, without read-ahead: at most the pages of
    # 2 queries x 16 documents (12.8 kB each, so at most 5 pages) become resident, not the file
    mapped = sum(m.rss for m in proc.memory_maps(grouped=True) if m.path.rsplit("/", 1)[-1].startswith("vectors."))
    assert 0 < mapped <= len(queries) * rerank * 5 * 4096, (mapped, vec_bytes)


@pytest.mark.parametrize("kind", ["int8", "float16"])
def test_the_two_step_route_of_the_gpu_gives_the_cpu_search(data, tmp_path, kind):
    """On a GPU the search returns the centroid stage's best `rerank` candidates and KeptVectors.rerank
    scores them; on the CPU the search scores them inside. Same results, bit for bit."""
    docs, queries, _ = data
    index = plaidx.Index.build(tmp_path / "ix", docs, nbits=2, seed=0, keep_vectors=kind)
    snap = index._snap
    for rerank in (12, 40):
        knobs = plaidx.SearchParams(rerank=rerank, cell_scores="int8")  # (unset, the CPU decides: see test_index)
        p = knobs.resolve(10, n_tokens=snap.n_tokens, tier=True)
        assert p.n_exact == rerank
        _, cand = index._search_cpu(snap, queries, snap.live_mask, p, snap.cell_codes, p.nprobe, rerank, 0)
        two_s, two_p = snap.kept.rerank(queries, snap.a["doc_offsets"], cand, 10)
        one_s, one_ids = index.search(queries, k=10, params=knobs)
        np.testing.assert_array_equal(one_ids, snap.ids_of(two_p))
        np.testing.assert_array_equal(one_s, two_s)
