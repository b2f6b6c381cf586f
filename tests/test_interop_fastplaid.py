"""fast-plaid / next-plaid / PyLate indexes converted to plaidx: bit-exact codes, fast-plaid's scores and answers.

The fixtures were written by the real fast-plaid 1.7.0 (benchmarks/peers/make_interop_fixtures.py) with its
own top-10 for a few queries. fast-plaid keeps its chunks merged (merged_codes.npy, merged_residuals.npy,
with padding rows) and an object array of raw embeddings (embeddings.npy) that the converter never loads.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from plaidx.errors import IndexFormatError, UnsafeFileError
from plaidx.interop.colbert import BIT_REVERSE
from plaidx.interop.fastplaid import DOCUMENT_IDS_FILE, convert_fastplaid, read_fastplaid

FIXTURES = Path(__file__).parent / "fixtures" / "interop"
NAMES = ["fastplaid_d96_b2", "fastplaid_d128_b4"]


def _peer(name):
    return dict(np.load(FIXTURES / name / "peer.npz"))


def _overlap(a, b):
    return float(np.mean([len(set(x.tolist()) & set(y.tolist())) / len(y) for x, y in zip(a, b)]))


@pytest.fixture(scope="module", params=NAMES)
def converted(request, tmp_path_factory):
    name = request.param
    dst = tmp_path_factory.mktemp(name) / "engine"
    return name, convert_fastplaid(FIXTURES / name / "index", dst), _peer(name)


def test_codes_and_residual_bits_equal_the_source(converted):
    name, index, peer = converted
    src = FIXTURES / name / "index"
    n = int(peer["doclens"].sum())
    src_codes = np.load(src / "merged_codes.npy")
    src_res = np.load(src / "merged_residuals.npy")
    assert src_codes.shape[0] > n  # fast-plaid pads the merged arrays; the padding is not imported
    snap = index._snap
    assert index.n_tokens == n
    assert np.array_equal(np.asarray(snap.a["codes"]).astype(np.int64), src_codes[:n])
    assert np.array_equal(np.asarray(snap.a["residuals"]), BIT_REVERSE[src_res[:n]])
    assert np.array_equal(snap.a["centroids"], np.load(src / "centroids.npy"))
    assert np.array_equal(snap.a["avg_residual"], np.load(src / "avg_residual.npy"))
    assert len(index) == len(peer["doclens"])


def test_fastplaids_scores_of_its_results_equal_maxsim_over_converted_vectors(converted):
    _, index, peer = converted
    worst = 0.0
    for q, ids, scores in zip(peer["queries"], peer["top_ids"], peer["top_scores"]):
        for pid, s in zip(ids, scores):
            d = index.reconstruct(int(pid))
            worst = max(worst, abs(float((q @ d.T).max(axis=1).sum()) - float(s)))
    assert worst < 3e-3  # fast-plaid scores in half precision (observed 1.2e-3 on sums near 20)


def test_exact_search_equals_brute_force_over_the_reference_decompression(converted):
    name, index, peer = converted
    fp = read_fastplaid(FIXTURES / name / "index")
    codes, res = next(fp.chunks())
    vecs = fp.decompress(codes, res)
    docs = np.split(vecs, np.cumsum(fp.doclens)[:-1])
    scores, ids = index.search(peer["queries"], k=10, exact=True)
    for q, s_row, i_row in zip(peer["queries"], scores, ids):
        brute = np.array([(q @ d.T).max(axis=1).sum() for d in docs])
        order = np.argsort(-brute, kind="stable")[:10]
        assert np.allclose(s_row, brute[order], atol=1e-4)
        clear = np.abs(brute[order] - brute[order][-1]) > 1e-4
        assert set(order[clear].tolist()) <= set(i_row.tolist())


def test_default_search_overlaps_fastplaids_top10(converted):
    _, index, peer = converted
    _, ours = index.search(peer["queries"], k=10)
    assert _overlap(ours, peer["top_ids"]) >= 0.9  # observed 0.95 / 0.97


def test_object_arrays_in_the_folder_are_never_loaded(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / NAMES[0] / "index", src)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name in ("embeddings.npy", "buffer.npy"):
        arr = np.empty(1, dtype=object)
        arr[0] = Payload()
        np.save(src / name, arr, allow_pickle=True)
    index = convert_fastplaid(src, tmp_path / "out")
    assert len(index) == len(_peer(NAMES[0])["doclens"]) and not marker.exists()
    np.save(src / "centroids.npy", arr, allow_pickle=True)  # a numeric file replaced by a pickle: refused
    with pytest.raises(UnsafeFileError, match="unsafe=True"):
        convert_fastplaid(src, tmp_path / "out2")
    assert not marker.exists() and not (tmp_path / "out2" / "manifest.json").exists()


def _pylate_folder(root: Path, doc_ids: list) -> Path:
    folder = root / "indexes" / "index"
    shutil.copytree(FIXTURES / NAMES[1] / "index", folder / "fast_plaid_index")
    (folder / "plaid_ids_to_documents_ids.pkl").write_bytes(pickle.dumps(dict(enumerate(doc_ids))))
    (folder / "documents_ids_to_plaid_ids.pkl").write_bytes(pickle.dumps({d: i for i, d in enumerate(doc_ids)}))
    return folder


def test_pylate_folder_keeps_its_document_ids(tmp_path):
    n = len(_peer(NAMES[1])["doclens"])
    doc_ids = [f"doc-{i * 7}" for i in range(n)]
    folder = _pylate_folder(tmp_path, doc_ids)
    index = convert_fastplaid(folder, tmp_path / "out")
    assert index.metadata["source"]["format"] == "pylate"
    assert json.loads((tmp_path / "out" / DOCUMENT_IDS_FILE).read_text()) == doc_ids
    assert len(index) == n
    # overwritten by an index without ids: the old ids, which name other documents, go with it
    plain = convert_fastplaid(FIXTURES / NAMES[0] / "index", tmp_path / "out", overwrite=True)
    assert "document_ids_file" not in plain.metadata["source"] and not (tmp_path / "out" / DOCUMENT_IDS_FILE).exists()


def test_pylate_id_map_with_a_payload_is_refused(tmp_path):
    n = len(_peer(NAMES[1])["doclens"])
    folder = _pylate_folder(tmp_path, list(range(n)))
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w')",))

    (folder / "plaid_ids_to_documents_ids.pkl").write_bytes(pickle.dumps({0: Payload()}))
    with pytest.raises(UnsafeFileError):
        convert_fastplaid(folder, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out" / "manifest.json").exists()


def test_next_plaid_float32_centroids_and_per_chunk_files(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(FIXTURES / NAMES[0] / "index", src)
    c16 = np.load(src / "centroids.npy")
    np.save(src / "centroids.npy", c16.astype(np.float32) * np.float32(1 + 1e-4))  # not float16-representable
    n = int(_peer(NAMES[0])["doclens"].sum())
    np.save(src / "0.codes.npy", np.load(src / "merged_codes.npy")[:n])
    np.save(src / "0.residuals.npy", np.load(src / "merged_residuals.npy")[:n])
    for name in ("merged_codes.npy", "merged_residuals.npy"):
        (src / name).unlink()
    index = convert_fastplaid(src, tmp_path / "out")
    assert any("rounded to float16" in note for note in index.metadata["source"]["notes"])
    ref = convert_fastplaid(FIXTURES / NAMES[0] / "index", tmp_path / "ref")
    a = np.concatenate([index.reconstruct(i) for i in range(5)])
    b = np.concatenate([ref.reconstruct(i) for i in range(5)])
    assert np.abs(a - b).max() < 2e-3
    (src / "0.residuals.npy").unlink()
    with pytest.raises(IndexFormatError, match="incomplete"):
        convert_fastplaid(src, tmp_path / "out3")


def test_folders_of_another_kind_are_refused(tmp_path):
    with pytest.raises(IndexFormatError, match="convert_colbert"):
        convert_fastplaid(FIXTURES / "colbert_d96_b4" / "index", tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError, match="not a fast-plaid"):
        convert_fastplaid(tmp_path / "empty", tmp_path / "b")
    src = tmp_path / "nocentroids"
    shutil.copytree(FIXTURES / NAMES[0] / "index", src)
    cpath = src / "centroids.npy"
    np.save(cpath, np.zeros((0, np.load(cpath).shape[1]), np.load(cpath).dtype))
    with pytest.raises(IndexFormatError, match="has no centroids"):
        convert_fastplaid(src, tmp_path / "c")


def test_documents_pending_in_fastplaids_buffer_are_converted(tmp_path):
    # fast-plaid keeps updates below its buffer size in buffer.npy (an object array, never loaded here) and
    # compresses them into the index at once: the converted index has them, near their original vectors
    name = "fastplaid_buffer_d96_b2"
    peer = _peer(name)
    assert (FIXTURES / name / "index" / "buffer.npy").is_file()
    index = convert_fastplaid(FIXTURES / name / "index", tmp_path / "out")
    n, pending = len(peer["doclens"]), int(peer["n_pending"])
    assert len(index) == n
    got = np.concatenate([index.reconstruct(i) for i in range(n - pending, n)])
    assert float((got * peer["pending"]).sum(axis=1).mean()) > 0.95  # 2-bit reconstructions (observed 0.97)
    worst = 0.0
    for q, ids, scores in zip(peer["queries"], peer["top_ids"], peer["top_scores"]):
        for pid, s in zip(ids, scores):
            d = index.reconstruct(int(pid))
            worst = max(worst, abs(float((q @ d.T).max(axis=1).sum()) - float(s)))
    assert worst < 3e-3
