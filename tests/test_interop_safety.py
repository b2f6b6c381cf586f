"""Foreign files are read without executing anything: crafted pickles, object arrays, truncated files, wrong folders."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

from plaidx.errors import IndexFormatError, UnsafeFileError
from plaidx.interop.safe_pickle import load_npy, load_plain_pickle, load_pt


class _SystemCall:
    """Pickles as a call to os.system that would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _WriteFile:
    """Pickles as a call to builtins.exec that would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _pt_archive(path, payload: bytes, prefix="archive"):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{prefix}/data.pkl", payload)
        zf.writestr(f"{prefix}/byteorder", "little")
        zf.writestr(f"{prefix}/version", "3\n")


def test_pt_calling_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    assert pickle.loads(pickle.dumps(_SystemCall(tmp_path / "control"))) == 0  # the payload does work...
    assert (tmp_path / "control").exists()
    pt = tmp_path / "centroids.pt"
    _pt_archive(pt, pickle.dumps({"w": _SystemCall(marker)}, protocol=2))
    with pytest.raises(UnsafeFileError, match=r"system.*never loads"):  # ...but not through load_pt
        load_pt(pt)
    assert not marker.exists()


def test_pkl_with_reduce_payload_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    pkl = tmp_path / "documents_ids_to_plaid_ids.pkl"
    pkl.write_bytes(pickle.dumps({"a": 0, "b": _WriteFile(marker)}))
    with pytest.raises(UnsafeFileError, match="exec"):
        load_plain_pickle(pkl)
    assert not marker.exists()


def test_pkl_of_plain_data_loads(tmp_path):
    pkl = tmp_path / "ids.pkl"
    data = {"doc-1": 0, 7: [1, 2.5, None, True], "t": ("x", b"y")}
    pkl.write_bytes(pickle.dumps(data, protocol=4))
    assert load_plain_pickle(pkl) == data


def test_pkl_naming_any_class_is_refused(tmp_path):
    pkl = tmp_path / "ids.pkl"
    pkl.write_bytes(pickle.dumps({"s": {1, 2}}, protocol=2))  # protocol 2 pickles a set as builtins.set(...)
    with pytest.raises(UnsafeFileError, match=r"builtin__?\.set"):
        load_plain_pickle(pkl)


def test_pt_storage_of_a_foreign_type_is_refused(tmp_path):
    # a persistent id naming os.system as its storage type: find_class refuses it before persistent_load
    pt = tmp_path / "x.pt"
    payload = (b"\x80\x02(X\x07\x00\x00\x00storagecposix\nsystem\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ.")
    _pt_archive(pt, payload)
    with pytest.raises(UnsafeFileError, match="posix.system"):
        load_pt(pt)


def test_a_file_that_rewrites_an_allowed_name_changes_no_later_file(tmp_path):
    """BUILD on a looked-up name sets attributes on it; no later file may be read through what one file changed."""
    import torch

    honest = tmp_path / "honest.pt"
    torch.save(torch.tensor([1.5, -2.25, 3.0]), honest)
    for name in (b"ctorch\nFloatStorage\n", b"ctorch._utils\n_rebuild_tensor_v2\n"):
        # GLOBAL name; {"dtype": "int32", "__defaults__": ...}; BUILD; POP; return 0
        payload = (b"\x80\x02" + name + b"}X\x05\x00\x00\x00dtypeX\x05\x00\x00\x00int32sb0K\x00.")
        hostile = tmp_path / "hostile.pt"
        _pt_archive(hostile, payload)
        try:
            load_pt(hostile)
        except (IndexFormatError, UnsafeFileError):
            pass  # refusing it is fine too; what matters is the next file
        np.testing.assert_array_equal(load_pt(honest), np.array([1.5, -2.25, 3.0], np.float32))


def test_object_npy_is_refused_unless_unsafe(tmp_path):
    path = tmp_path / "buffer.npy"
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = np.ones((2, 4), np.float32), np.zeros((3, 4), np.float32)
    np.save(path, arr, allow_pickle=True)
    with pytest.raises(UnsafeFileError, match="unsafe=True"):
        load_npy(path)
    got = load_npy(path, unsafe=True)
    assert got.dtype == object and np.array_equal(got[1], np.zeros((3, 4)))


def test_object_npy_with_payload_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "embeddings.npy"
    arr = np.empty(1, dtype=object)
    arr[0] = _SystemCall(marker)
    np.save(path, arr, allow_pickle=True)
    with pytest.raises(UnsafeFileError):
        load_npy(path)
    assert not marker.exists()


def test_truncated_npy_is_a_format_error(tmp_path):
    path = tmp_path / "centroids.npy"
    np.save(path, np.arange(1000, dtype=np.float32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match="truncated"):
        load_npy(path)


def test_truncated_and_non_zip_pt_are_format_errors(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "0.residuals.pt"
    torch.save(torch.arange(4096, dtype=torch.int32), path)
    assert np.array_equal(load_pt(path), np.arange(4096, dtype=np.int32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match="truncated"):
        load_pt(path)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(IndexFormatError, match="legacy"):
        load_pt(legacy)
    with pytest.raises(IndexFormatError, match="not found"):
        load_pt(tmp_path / "missing.pt")


def test_corrupted_storage_bytes_are_a_format_error(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "codes.pt"
    torch.save(torch.arange(20000, dtype=torch.int64), path)
    data = bytearray(path.read_bytes())
    at = data.find(np.arange(100, 101, dtype=np.int64).tobytes())  # inside the storage member
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="corrupted"):
        load_pt(path)


def test_pt_round_trips_torch_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cases = {"half": torch.randn(5, 8).half(), "int32": torch.arange(7, dtype=torch.int32),
             "scalar": torch.tensor(0.25), "uint8_view": torch.randint(0, 255, (6, 8), dtype=torch.uint8)[:, ::2],
             "transposed": torch.randn(4, 3).t(), "bf16": torch.randn(3).bfloat16()}
    for name, t in cases.items():
        torch.save(t, tmp_path / f"{name}.pt")
        want = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        got = load_pt(tmp_path / f"{name}.pt")
        assert got.dtype == want.dtype and np.array_equal(got, want), name
    torch.save((torch.zeros(3), torch.ones(4, dtype=torch.int64)), tmp_path / "tuple.pt")
    a, b = load_pt(tmp_path / "tuple.pt")
    assert np.array_equal(a, np.zeros(3, np.float32)) and np.array_equal(b, np.ones(4, np.int64))


def test_truncated_pkl_is_a_format_error(tmp_path):
    pkl = tmp_path / "plaid_ids_to_documents_ids.pkl"
    data = pickle.dumps({i: f"doc-{i}" for i in range(100)})
    pkl.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexFormatError, match="truncated"):
        load_plain_pickle(pkl)
