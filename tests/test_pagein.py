"""The search's page-in before step 5 (csrc/cpu/pagein.h): on a cold memory map, the rows of the listed documents
are read in together, and nothing else; on a resident one, no advice is given. And Index.warm, which derives what
a first search would and can ask for the whole folder."""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import time

import numpy as np
import pytest

import plaidx

try:
    from plaidx import _core
except ImportError:  # pragma: no cover - depends on the build
    _core = None

pytestmark = [
    pytest.mark.skipif(_core is None, reason="plaidx._core is not built; `python setup.py build_ext --inplace`"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and mincore as Linux has them"),
]

PAGE = mmap.PAGESIZE
ROW = 128                         # bytes a token, as the kept int8 rows at d 128
TOKENS = 8 * PAGE // ROW          # tokens a document: 8 pages each
NDOCS = 64


def evict(path) -> None:
    """Drop a file from the page cache (written back first), so that what maps it pages in shows."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _resident_pages(arr: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """bool per page of arr's bytes [lo, hi): in the page cache (mincore)."""
    libc = ctypes.CDLL(None, use_errno=True)
    start = (arr.ctypes.data + lo) // PAGE * PAGE
    n = (arr.ctypes.data + hi - start + PAGE - 1) // PAGE
    vec = (ctypes.c_ubyte * n)()
    assert libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(n * PAGE), vec) == 0, ctypes.get_errno()
    return np.frombuffer(vec, np.uint8) & 1 == 1


def _doc_pages(arr, offsets, doc) -> np.ndarray:
    return _resident_pages(arr, int(offsets[doc]) * ROW, int(offsets[doc + 1]) * ROW)


@pytest.fixture()
def cold_rows(tmp_path):
    path = tmp_path / "rows.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(-127, 128, (NDOCS * TOKENS, ROW), dtype=np.int8))
    evict(path)
    arr = np.load(path, mmap_mode="r")
    arr._mmap.madvise(mmap.MADV_RANDOM)  # as the kept vectors are mapped: no read-ahead around a fault
    offsets = np.arange(NDOCS + 1, dtype=np.int64) * TOKENS
    if _doc_pages(arr, offsets, 3).any():
        pytest.skip("this file system keeps evicted pages (tmpfs?): nothing to page in")
    return arr, offsets


def test_page_in_reads_the_listed_documents_rows_and_no_others(cold_rows):
    arr, offsets = cold_rows
    listed = [40, 3, 11, 10]  # in score order, as step 5 lists them; 10 and 11 touch, so one range
    assert _core.page_in_rows([arr], offsets, np.array(listed, np.int64)) == 3
    deadline = time.monotonic() + 10
    while not all(_doc_pages(arr, offsets, d).all() for d in listed) and time.monotonic() < deadline:
        time.sleep(0.01)
    for d in listed:
        assert _doc_pages(arr, offsets, d).all(), d
    # more than 16 KiB from every listed document's rows (document 0 holds the header np.load reads)
    for d in (1, 6, 7, 20, 30, 50, 63):
        assert not _doc_pages(arr, offsets, d).any(), d
    # now resident: the sample finds every first page in, and no advice is given
    assert _core.page_in_rows([arr], offsets, np.array(listed, np.int64)) == 0


def test_page_in_merges_ranges_closer_than_16_kib(cold_rows):
    arr, offsets = cold_rows
    # documents 20 and 22 are one 32 KiB document apart: two ranges; 2 and 3 touch: one
    assert _core.page_in_rows([arr], offsets, np.array([22, 20, 3, 2], np.int64)) == 3
    small = np.arange(NDOCS + 1, dtype=np.int64) * (PAGE // ROW)  # one page a document: gaps of a page merge
    evict(arr.filename)
    assert _core.page_in_rows([arr[: NDOCS * (PAGE // ROW)]], small, np.array([9, 1, 5], np.int64)) == 1


def test_page_in_gives_no_advice_for_memory_already_in_ram():
    rows = np.zeros((NDOCS * TOKENS, ROW), np.int8)
    rows[:] = 1  # touched: resident
    offsets = np.arange(NDOCS + 1, dtype=np.int64) * TOKENS
    assert _core.page_in_rows([rows, rows[:, 0].copy()], offsets, np.arange(NDOCS, dtype=np.int64)) == 0
    assert _core.page_in_rows([rows], offsets, np.zeros(0, np.int64)) == 0


def test_page_in_rejects_what_does_not_match_the_offsets():
    rows = np.zeros((10, ROW), np.int8)
    offsets = np.array([0, 4, 10], np.int64)
    with pytest.raises(ValueError, match=r"docs\[1\] = 2 is outside \[0, ndocs\)"):
        _core.page_in_rows([rows], offsets, np.array([0, 2], np.int64))
    with pytest.raises(ValueError, match="one row per token"):
        _core.page_in_rows([rows[:9]], offsets, np.array([0], np.int64))
    with pytest.raises(ValueError, match="one row per token"):
        _core.page_in_rows([rows[:, ::2]], offsets, np.array([0], np.int64))
    with pytest.raises(ValueError, match="numpy arrays"):
        _core.page_in_rows([b"bytes"], offsets, np.array([0], np.int64))
    with pytest.raises(ValueError, match="doc_offsets"):
        _core.page_in_rows([rows], np.array([0, 4, 9], np.int64), np.array([0], np.int64))


def test_a_cold_tiered_index_searches_as_a_warm_one(tmp_path):
    """A search over evicted files (the page-in path taken) returns what it returns with every page resident."""
    rng = np.random.default_rng(5)
    docs = [rng.standard_normal((int(n), 64)).astype(np.float32) for n in rng.integers(20, 60, 300)]
    queries = rng.standard_normal((3, 8, 64)).astype(np.float32)
    index = plaidx.Index.build(tmp_path / "ix", docs, nbits=2, nlist=64, kmeans_niters=2, keep_vectors="int8")
    warm = [index.search(queries, k=5, **kw) for kw in ({}, {"rerank": 0})]
    del index
    for f in (tmp_path / "ix").iterdir():
        if f.is_file():
            evict(f)
    index = plaidx.Index.open(tmp_path / "ix")
    for kw, (scores, ids) in zip(({}, {"rerank": 0}), warm):
        got_scores, got_ids = index.search(queries, k=5, **kw)
        np.testing.assert_array_equal(got_ids, ids)
        np.testing.assert_array_equal(got_scores, scores)


def test_warm_derives_what_the_first_search_would(tmp_path):
    rng = np.random.default_rng(6)
    docs = [rng.standard_normal((int(n), 64)).astype(np.float32) for n in rng.integers(20, 60, 200)]
    index = plaidx.Index.build(tmp_path / "ix", docs, nbits=2, nlist=32, kmeans_niters=2)
    queries = rng.standard_normal((2, 8, 64)).astype(np.float32)
    want = index.search(queries, k=5)
    index = plaidx.Index.open(tmp_path / "ix")
    snap = index._snap
    assert snap._ivf is None and snap._doc_cells is None
    assert index.warm() is index
    assert snap._ivf is not None and snap._doc_cells is not None and "cell_codes" in vars(snap)
    got = index.search(queries, k=5)
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[0], want[0])
    index.add(docs[:2])  # a new generation is derived again by its own first search, or warm
    assert index._snap._ivf is None
    index.warm()
    assert index._snap._ivf is not None


def test_warm_read_asks_for_every_map_of_the_folder(tmp_path):
    rng = np.random.default_rng(7)
    docs = [rng.standard_normal((100, 128)).astype(np.float32) for _ in range(300)]  # 30k tokens, 3.8 MB kept
    plaidx.Index.build(tmp_path / "ix", docs, nbits=2, nlist=64, kmeans_niters=2, keep_vectors="int8")
    for f in (tmp_path / "ix").iterdir():
        if f.is_file():
            evict(f)
    index = plaidx.Index.open(tmp_path / "ix", verify="none")
    vectors = index._snap.kept.vectors
    if _resident_pages(vectors, 0, vectors.nbytes).mean() > 0.5:
        pytest.skip("this file system keeps evicted pages (tmpfs?): nothing to read in")
    assert index._snap.warm(read=False) == 0
    advised = index._snap.warm(read=True)
    assert advised >= 3  # the codes, the residuals and the kept vectors at least
    deadline = time.monotonic() + 10
    while _resident_pages(vectors, 0, vectors.nbytes).mean() < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _resident_pages(vectors, 0, vectors.nbytes).all()
