"""Living indexes: add, delete, compact and recluster without a silent rebuild; ids stay stable."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from synth import clustered_collection

import plaidx


@pytest.fixture()
def data():
    return clustered_collection(n_docs=240, dim=32, mean_len=24, n_queries=12, seed=5)


def _full(index, queries, k=10):
    n = max(1, index._snap.n_docs)
    return index.search(queries, k=k, nprobe=index.nlist, centroid_score_threshold=-1e9, ndocs=n, n_exact=n)


def test_add_delete_compact_equal_a_fresh_build_with_the_same_codec(data, tmp_path):
    docs, queries, _ = data
    base = plaidx.Index.build(tmp_path / "base", docs[:160], nbits=2, seed=0)
    new_ids = base.add(docs[160:])
    assert new_ids.tolist() == list(range(160, 240))
    gone = list(range(0, 240, 3))
    assert base.delete(gone) == len(gone)
    live = [i for i in range(240) if i not in set(gone)]
    assert base.ids.tolist() == live and len(base) == len(live)

    fresh = plaidx.Index.build(tmp_path / "fresh", [docs[i] for i in live], codec_from=base)
    to_orig = np.array(live)
    s_upd, i_upd = _full(base, queries)
    s_new, i_new = _full(fresh, queries)
    np.testing.assert_allclose(s_upd, s_new, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(i_upd, to_orig[i_new])
    assert not set(i_upd.ravel().tolist()) & set(gone)

    # compaction reclaims space and changes nothing a search can see; ids stay
    size_before = base.info()["bytes_on_disk"]
    assert base.compact() == len(gone)
    assert base.info()["bytes_on_disk"] < size_before
    s_c, i_c = _full(base, queries)
    np.testing.assert_allclose(s_c, s_upd, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(i_c, i_upd)
    assert base.ids.tolist() == live
    # default (pruned) search after updates only returns live documents
    _, ids = base.search(queries, k=10)
    assert set(ids[ids >= 0].tolist()) <= set(live)
    # new ids continue after the largest ever assigned, even after compaction
    more = base.add(docs[:2])
    assert more.tolist() == [240, 241]
    np.testing.assert_allclose(base.reconstruct(241), base.reconstruct(1), atol=1e-6)


def test_updates_survive_reopen_and_keep_generations(data, tmp_path):
    docs, queries, _ = data
    idx = plaidx.Index.build(tmp_path / "i", docs[:100], nbits=2)
    g0 = idx.generation
    idx.add(docs[100:120])
    idx.delete([5, 6, 7])
    reopened = plaidx.Index.open(tmp_path / "i", verify="full")
    assert reopened.generation == g0 + 2
    assert reopened.ids.tolist() == [i for i in range(120) if i not in (5, 6, 7)]
    assert reopened.verify() == []
    # an older handle keeps its consistent view until reload
    old = plaidx.Index.open(tmp_path / "i")
    idx.delete([8])
    assert 8 in old.ids.tolist()
    assert 8 not in old.reload().ids.tolist()


def test_stale_handle_writes_against_the_newest_generation(data, tmp_path):
    docs, _, _ = data
    a = plaidx.Index.build(tmp_path / "i", docs[:50], nbits=2)
    b = plaidx.Index.open(tmp_path / "i")
    a.add(docs[50:60])
    ids = b.add(docs[60:65])  # b reloads under the lock first: nothing a wrote is lost
    assert ids.tolist() == list(range(60, 65))
    assert plaidx.Index.open(tmp_path / "i").ids.tolist() == list(range(65))


@pytest.mark.parametrize("kind", ["index", "sharded"])
@pytest.mark.parametrize("split", ["lengths", "filters"])
def test_refresh_during_a_search_leaves_the_call_on_one_generation(data, tmp_path, monkeypatch, split, kind):
    """A call searched in parts (queries of different lengths, one filter per query) answers every part from the
    generation it started on, though another handle's delete is picked up between two parts."""
    docs, _, _ = data
    import plaidx.engine.inputs as module  # both search their parts through inputs.search_parts
    if kind == "index":
        reader = plaidx.Index.build(tmp_path / "i", docs[:60], nbits=2)
        writer = plaidx.Index.open(tmp_path / "i")
    else:
        from plaidx.distributed import ShardedIndex, build
        reader = build(tmp_path / "i", docs[:60], 2, nlist=16)
        writer = ShardedIndex.open(tmp_path / "i")
    # every query is document 7's own tokens
    queries = np.stack([docs[7][:4]] * 6) if split == "filters" else [docs[7][: 4 + i % 2] for i in range(6)]
    filters = [[7, 8, 9 + i] for i in range(6)] if split == "filters" else None
    calls = []

    def commit_after_first_part(parts, k, search):  # the writer deletes 7 and the reader refreshes after one part
        def part(qs, allowed):
            out = search(qs, allowed)
            if not calls:
                writer.delete([7])
                assert reader.refresh()
            calls.append(len(qs))
            return out
        return real(parts, k, part)

    real = module.search_parts
    monkeypatch.setattr(module, "search_parts", commit_after_first_part)
    _, ids = reader.search(queries, k=3, doc_ids=filters)
    assert len(calls) >= 2 and ids[:, 0].tolist() == [7] * 6  # every part from the generation the call began on
    monkeypatch.setattr(module, "search_parts", real)
    _, ids = reader.search(queries, k=3, doc_ids=filters)
    assert 7 not in ids  # the next call reads the new generation


def test_a_filter_naming_deleted_ids_gives_the_same_answer_before_and_after_compaction(data, tmp_path):
    docs, queries, _ = data
    index = plaidx.Index.build(tmp_path / "i", docs[:40], nbits=2)
    index.delete([7, 9])
    before = index.search(queries, k=3, doc_ids=[5, 7, 9, 11])
    assert index.compact() == 2
    after = index.search(queries, k=3, doc_ids=[5, 7, 9, 11])
    np.testing.assert_array_equal(before[1], after[1])
    assert set(after[1].ravel().tolist()) <= {5, 11, -1}
    for never in ([40], [-1]):  # ids the index never issued stay errors
        with pytest.raises(KeyError, match=r"unknown document ids.*issued ids 0 to 39"):
            index.search(queries, k=3, doc_ids=[5, *never])


def test_bad_updates_change_nothing(data, tmp_path):
    docs, queries, _ = data
    idx = plaidx.Index.build(tmp_path / "i", docs[:60], nbits=2)
    g = idx.generation
    with pytest.raises(KeyError, match="unknown document ids"):
        idx.delete([3, 999])
    idx.delete([3])
    with pytest.raises(KeyError, match=r"\[3\] \(or deleted"):
        idx.delete([3])  # already deleted
    with pytest.raises(ValueError, match="dimension 16"):
        idx.add([np.ones((4, 16), np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        idx.add([docs[0], np.full((2, 32), np.nan, np.float32)])
    with pytest.raises(ValueError, match="no documents"):
        idx.add([])
    with pytest.raises(KeyError):
        idx.reconstruct(3)
    assert idx.generation == g + 1
    again = plaidx.Index.open(tmp_path / "i", verify="full")
    assert again.ids.tolist() == [i for i in range(60) if i != 3]
    assert not [p for p in (tmp_path / "i").iterdir() if p.name.endswith(".tmp")]
    assert idx.delete({4, 5}) == 2 and idx.delete(range(6, 8)) == 2  # a set or a range of ids
    assert not {4, 5, 6, 7} & set(plaidx.Index.open(tmp_path / "i").ids.tolist())


def test_drift_is_measured_and_recluster_is_offered(tmp_path):
    rng = np.random.default_rng(0)
    docs, _, _ = clustered_collection(n_docs=120, dim=32, mean_len=16, seed=2, noise=0.1)
    idx = plaidx.Index.build(tmp_path / "i", docs, nbits=2)
    assert idx.drift()["ratio"] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        idx.add(docs[:10])  # same distribution: no warning
    assert idx.drift()["ratio"] < 1.25
    far = [rng.standard_normal((16, 32)).astype(np.float32) for _ in range(60)]
    far = [x / np.linalg.norm(x, axis=1, keepdims=True) for x in far]
    with pytest.warns(UserWarning, match="recluster"):
        idx.add(far)
    d = idx.drift()
    assert d["recommend_recluster"] and d["ratio"] > 1.25
    ids_before = idx.ids.tolist()
    idx.recluster()
    assert idx.ids.tolist() == ids_before
    assert idx.drift()["ratio"] is None and idx.drift()["added_tokens"] == 0
    assert idx.search(far[0], k=1)[1][0] == ids_before[-60]
