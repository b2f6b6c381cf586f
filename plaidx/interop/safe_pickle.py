"""Read other engines' .pt, .pkl and .npy files without torch and without ever executing a pickle.

A ``.pt`` file written by ``torch.save`` (torch >= 1.6) is a zip archive: ``<name>/data.pkl`` is a pickle
that rebuilds tensors from storages kept as raw little-endian zip members ``<name>/data/<key>``. The
unpickler here resolves only an explicit allow-list of globals (the tensor-rebuild function, the typed
storage classes and ``collections.OrderedDict``) to harmless local stand-ins and turns tensors into numpy
arrays; any other global (``os.system``, ``builtins.eval``, a ``__reduce__`` payload's callable) raises
:class:`~plaidx.errors.UnsafeFileError` before anything runs. ``.pkl`` id maps allow no global at all,
and ``.npy`` files are read with ``allow_pickle=False`` unless the caller passes ``unsafe=True``.
"""

from __future__ import annotations

import collections
import functools
import io
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexFormatError, UnsafeFileError

# torch storage class name -> numpy dtype of its elements (bfloat16 is widened to float32 on read)
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    """Stand-in for a ``torch.<X>Storage`` class named in a pickle: only its element dtype."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage:
    """A storage's raw bytes (a zip member) and its element dtype."""

    def __init__(self, data: bytes, dtype: Any):
        if dtype == "bfloat16":  # widen: bfloat16 is the high half of a float32
            raw = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
            self.array = raw.view(np.float32)
        else:
            dt = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
            if len(data) % dt.itemsize:
                raise IndexFormatError(f"a storage of {len(data)} bytes is not a whole number of {dt} elements")
            self.array = np.frombuffer(data, dtype=dt)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> np.ndarray:
    """The allow-listed ``torch._utils._rebuild_tensor_v2``: the tensor's elements as numpy (a read-only view
    of the storage when C-contiguous, else a contiguous copy)."""
    if not isinstance(storage, _Storage):
        raise UnsafeFileError("a tensor in the file is built from something other than a storage; refused")
    try:
        offset, size, stride = int(offset), tuple(int(s) for s in size), tuple(int(s) for s in stride)
    except (TypeError, ValueError):
        raise IndexFormatError("a tensor's offset, size or stride is malformed") from None
    if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise IndexFormatError(f"a tensor's size {size} and stride {stride} are inconsistent")
    arr = storage.array
    if 0 in size:
        return np.zeros(size, dtype=arr.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= arr.size:
        raise IndexFormatError(f"a tensor of size {size} reads past the end of its storage "
                               f"({arr.size} elements); the file is truncated or damaged")
    contiguous = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
    if all(n == 1 or s == c for n, s, c in zip(size, stride, contiguous)):  # C order: a view, no copy
        return arr[offset:offset + int(np.prod(size))].reshape(size)
    view = np.lib.stride_tricks.as_strided(arr[offset:], shape=size,
                                           strides=tuple(s * arr.itemsize for s in stride), writeable=False)
    return np.array(view)  # a contiguous copy, owning its memory


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    return collections.OrderedDict(*args)


# (module, name) -> a factory of what the name resolves to. Nothing else may be looked up. Each lookup gets an object
# of its own: a pickle's BUILD opcode can set attributes on what it looked up, and must not change how any later file
# is read (a shared storage type whose dtype a hostile file rewrote would misread every later tensor).
_PT_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): lambda: functools.partial(_rebuild_tensor),
    ("collections", "OrderedDict"): lambda: functools.partial(_ordered_dict),
    **{("torch", name): functools.partial(_StorageType, name) for name in _STORAGE_DTYPES},
}


class _AllowListUnpickler(pickle.Unpickler):
    """An unpickler whose globals come only from ``allowed``; every other lookup is refused."""

    def __init__(self, file: Any, allowed: dict[tuple[str, str], Any], where: str, storages: Any = None):
        super().__init__(file)
        self._allowed = allowed
        self._where = where
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]()
        except KeyError:
            raise UnsafeFileError(
                f"{self._where}: the pickle asks for {module}.{name}, which plaidx never loads (only tensors, "
                "plain containers, numbers and strings are allowed); the file was not loaded and nothing in "
                "it ran. If you trust it, convert it with its own library first") from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise UnsafeFileError(f"{self._where}: the pickle refers to external objects; refused")
        return self._storages(pid)


def _unpickle(data: bytes, allowed: dict[tuple[str, str], Any], where: str, storages: Any = None) -> Any:
    try:
        return _AllowListUnpickler(io.BytesIO(data), allowed, where, storages).load()
    except (UnsafeFileError, IndexFormatError):
        raise
    except RecursionError:
        raise IndexFormatError(f"{where}: the pickle nests too deeply; refused") from None
    except Exception as exc:  # truncated or malformed pickle streams raise many kinds
        raise IndexFormatError(f"{where}: unreadable or truncated pickle ({type(exc).__name__}: {exc})") from None


def load_pt(path: str | Path) -> Any:
    """Load a ``torch.save`` file (zip format) as numpy, running none of its pickle.

    Tensors become numpy arrays (bfloat16 widened to float32); tuples, lists, dicts, numbers and
    strings stay as they are. Raises :class:`UnsafeFileError` for any other object the pickle asks for
    and :class:`IndexFormatError` for a missing, truncated or non-zip file.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise IndexFormatError(f"{where}: file not found")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(2)
        hint = (" (it looks like a bare pickle or a legacy torch<1.6 file: plaidx reads only zip-format .pt "
                "files; re-save it with a current torch.save)" if head[:1] == b"\x80" else "")
        raise IndexFormatError(f"{where}: not a torch .pt file or truncated (not a zip archive){hint}") from None
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise IndexFormatError(f"{where}: a .pt archive must hold exactly one data.pkl, found {len(pkl)}")
        prefix = pkl[0][: -len("data.pkl")]
        bo = prefix + "byteorder"
        if bo in names and zf.read(bo).strip() not in (b"little", b""):
            raise IndexFormatError(f"{where}: big-endian .pt files are not supported")
        cache: dict[str, _Storage] = {}

        def storage(pid: Any) -> _Storage:
            if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
                    and isinstance(pid[1], _StorageType)):
                raise UnsafeFileError(f"{where}: unexpected persistent id {pid!r:.80}; refused")
            key = str(pid[2])
            if key not in cache:
                member = f"{prefix}data/{key}"
                try:
                    cache[key] = _Storage(zf.read(member), pid[1].dtype)
                except KeyError:
                    raise IndexFormatError(f"{where}: storage {key!r} is missing from the archive") from None
                except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
                    raise IndexFormatError(f"{where}: storage {key!r} is truncated or corrupted ({exc})") from None
            return cache[key]

        try:
            data = zf.read(pkl[0])
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
            raise IndexFormatError(f"{where}: truncated or corrupted ({exc})") from None
        return _unpickle(data, _PT_GLOBALS, where, storage)


def load_plain_pickle(path: str | Path) -> Any:
    """Load a pickle of plain data only (dicts, lists, tuples, sets, str, bytes, int, float, bool, None).

    Any global (a class, a function, a ``__reduce__`` callable) is refused with :class:`UnsafeFileError`
    before it runs: PyLate's id maps need none.
    """
    path = Path(path)
    if not path.is_file():
        raise IndexFormatError(f"{path}: file not found")
    return _unpickle(path.read_bytes(), {}, str(path))


def load_npy(path: str | Path, *, unsafe: bool = False, mmap: bool = False) -> np.ndarray:
    """Load a ``.npy`` file with ``allow_pickle=False``.

    Object arrays (which hold pickles) are refused with :class:`UnsafeFileError` unless ``unsafe=True``:
    then the pickle inside is executed, so pass it only for files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise IndexFormatError(f"{path}: file not found")
    try:
        return np.load(path, allow_pickle=bool(unsafe), mmap_mode="r" if mmap else None)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise UnsafeFileError(
                f"{path}: an object array (a pickle inside .npy); plaidx does not load it by default because "
                "loading it can run code. If you trust the file, pass unsafe=True (CLI: --unsafe)") from None
        raise IndexFormatError(f"{path}: unreadable or truncated .npy ({exc})") from None
    except (OSError, EOFError) as exc:
        raise IndexFormatError(f"{path}: unreadable or truncated .npy ({exc})") from None


__all__ = ["load_npy", "load_plain_pickle", "load_pt"]
