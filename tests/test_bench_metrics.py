"""The benchmarks' near-tie recall: a swap inside a plateau of equal scores is not a miss, a far document is."""

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from collection import recall_at_k, tie_recall_at_k  # noqa: E402


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
