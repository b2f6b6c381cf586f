"""The benchmarks' metrics: near-tie recall (a swap inside a plateau of equal scores is not a miss, a far document
is) and recall split by whether a neighbour shares a topic with its query's source document."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import families  # noqa: E402
from collection import recall_at_k, split_recall_at_k, tie_recall_at_k  # noqa: E402


def _coll():
    # one query token along x; documents score 1.0, 0.9, 0.899, 0.5 (one token each)
    vals = np.array([[1.0, 0.0], [0.9, 0.1], [0.899, 0.2], [0.5, 0.8]], np.float32)
    return SimpleNamespace(values=vals, offsets=np.arange(5), queries=np.array([[[1.0, 0.0]]], np.float32))


def test_tie_recall_counts_near_ties_and_not_far_documents():
    coll = _coll()
    truth, kth = np.array([[0, 1]]), np.array([0.9], np.float32)
    swapped = np.array([[0, 2]])  # 0.899 is within 1% of the 2nd best score 0.9
    far = np.array([[0, 3]])  # 0.5 is not
    assert recall_at_k(swapped, truth, 2) == 0.5
    assert tie_recall_at_k(swapped, coll, kth, 2, 0.01) == 1.0
    assert tie_recall_at_k(far, coll, kth, 2, 0.01) == 0.5
    assert tie_recall_at_k(swapped, coll, kth, 2, 0.0001) == 0.5  # a tolerance tighter than the gap
    assert tie_recall_at_k(np.array([[0, -1]]), coll, kth, 2, 0.5) == 0.5  # padding never counts


def test_split_recall_counts_each_group_of_neighbours_apart():
    truth = np.array([[5, 6, 7, -1], [1, 2, 3, 4]])
    group = np.array([[True, False, False, True], [True, True, False, False]])
    found = np.array([[6, 5, 9, 8], [2, 9, 3, 8]])
    # group: 5 (found), 1 (not), 2 (found): 2/3; others: 6, 7 | 3, 4 -> 6 and 3 found: 2/4; the -1 counts in neither
    assert split_recall_at_k(found, truth, group, 4) == (2 / 3, 0.5)
    first, rest = split_recall_at_k(found, truth, group, 1)  # top-1: 5 and 1, both in the group; 6 and 2 found
    assert first == 0.0 and np.isnan(rest)


@pytest.mark.parametrize("name", ["fewtopics", "manytopics"])
def test_a_family_s_topics_are_the_ones_its_tokens_were_drawn_from(tmp_path, name):
    """topics_of draws the topics again from the seeds: nearly every token's nearest topic centre is one of its
    document's topics, and shares_topic marks a document and its source, and documents with no common topic not."""
    coll = families.generate(name, 40, 128, 4, 3, tmp_path / name, log=False)
    topics = families.topics_of(coll)
    assert len(topics) == coll.n_docs
    centres = families.Family(name, 40, 128, 3).centres
    nearest = np.argmax(np.asarray(coll.values) @ centres.T, axis=1)
    own = [int(c) in topics[i] for i in range(coll.n_docs) for c in nearest[coll.offsets[i]:coll.offsets[i + 1]]]
    assert np.mean(own) > 0.95
    sources = np.load(coll.path / "sources.npy")
    others = [[next(d for d in range(coll.n_docs) if not topics[d] & topics[s])] for s in sources]
    ids = np.concatenate([sources[:, None], np.array(others), np.full((len(sources), 1), -1)], axis=1)
    np.testing.assert_array_equal(families.shares_topic(topics, sources, ids), [[True, False, False]] * len(sources))
    with pytest.raises(ValueError, match="not a family collection"):
        families.topics_of(SimpleNamespace(meta={"kind": "synthetic"}, path=tmp_path))


def test_topic_stats_tell_a_topical_family_from_one_of_chance_neighbours(tmp_path):
    """fewtopics' exact neighbours share their query's topics; at 150 documents manytopics' have only the source."""
    stats = {name: families.topic_stats(families.generate(name, 150, 64, 6, 1, tmp_path / name, log=False))
             for name in ("fewtopics", "manytopics")}
    few, many = stats["fewtopics"], stats["manytopics"]
    assert few["source_ranked_first"] == many["source_ranked_first"] == 1.0
    assert few["top10_sharing"] > 0.9 and few["related_docs_median"] > 10
    assert many["ranks_2_10_sharing"] < 0.2 and many["related_docs_median"] < 5
    report = families.topic_report([few, many], "stamp")
    assert "| fewtopics | " in report and "| manytopics | " in report


def test_the_held_out_hubs_family_has_its_own_dimension_shared_hubs_and_two_length_modes(tmp_path):
    """hubs: d 96 unless asked otherwise, about 30% of the tokens next to one of the 64 shared hubs, two length
    modes; the other families keep their own default dimension."""
    fam = families.Family("hubs", 2000, seed=3)
    assert fam.dim == 96 and families.cache_path("hubs", 10, None, 4, 0).name == "family_hubs_n10_d96_q4_s0"
    short, long = (fam.lengths < 80).mean(), (fam.lengths >= 80).mean()
    assert 0.5 < short < 0.7 and 0.3 < long < 0.5
    docs = np.concatenate(fam.chunk(0)[0])
    near_hub = (docs @ fam.hubs.T).max(axis=1) > 0.9
    assert 0.2 < near_hub.mean() < 0.4
    coll = families.generate("hubs", 40, None, 4, 3, tmp_path / "hubs", log=False)
    assert coll.dim == 96 and len(families.topics_of(coll)) == 40
    assert families.Family("fewtopics", 40, None, 3).dim == 128


def test_a_log_normal_family_regenerated_short_keeps_its_default_and_refuses_the_others():
    """mean_len scales the log-normal families' lengths (held-out short-document sets); unset, the lengths are the
    ones every cached family was generated with; the other families and lengths outside 4-400 are named errors."""
    default = families.Family("fewtopics", 3000, seed=3)
    assert np.array_equal(families.Family("fewtopics", 3000, seed=3, mean_len=None).lengths, default.lengths)
    assert 90 < default.lengths.mean() < 110 and default.lengths.min() >= 8
    short = families.Family("fewtopics", 3000, seed=3, mean_len=12).lengths
    assert 10 < short.mean() < 14 and short.min() >= 4
    for name, mean_len in (("heavytail", 12), ("hubs", 12), ("lowrank", 2), ("lowrank", 1000)):
        with pytest.raises(ValueError, match="mean_len sets the log-normal lengths"):
            families.Family(name, 40, seed=3, mean_len=mean_len)
    assert families.cache_path("lowrank", 80000, None, 300, 0, 12).name == "family_lowrank_n80000_d128_q300_s0_len12"
