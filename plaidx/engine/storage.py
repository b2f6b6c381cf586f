"""On-disk index format: generation manifests, checksummed .npy arrays, atomic commits and the writer lock.

An index folder holds ``manifest.json`` (the current generation), immutable ``<name>.<generation>.npy``
arrays named in it, and ``LOCK`` (held by the one writer). A commit writes and fsyncs new arrays, then
switches the manifest with one atomic rename, then retires the files no manifest names any more.
A crash at any instant leaves the last committed manifest and every file it names intact.
"""

from __future__ import annotations

import errno
import json
import mmap as mmap_module
import os
import re
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import IndexFormatError, IndexLockedError
from .codec import code_dtype

FORMAT_NAME = "plaidx-index"
FORMAT_VERSION = 3  # 3: centroids as 4-bit pairs + scales at nbits <= 2; 2: int8 rows; 1: float16
# Format 4 differs from 3 only in uint32 codes (nlist > 65536). Only such indexes are written as 4, so a
# plaidx that predates it refuses them by version ("newer than this plaidx supports") instead of misreading
# the codes, and still opens every uint16 index written since.
WIDE_CODES_FORMAT_VERSION = 4
# Format 5 adds the pq residual codec (codec.py: pq_table, pq_levels). Only pq indexes are written as 5, so an
# older plaidx refuses them by version instead of decoding their bytes with per-dimension codebooks.
PQ_FORMAT_VERSION = 5
NEWEST_FORMAT_VERSION = PQ_FORMAT_VERSION
_CODE_DTYPES = {"<u2": 1, "<u4": WIDE_CODES_FORMAT_VERSION}  # codes dtype -> the first version that has it
MANIFEST = "manifest.json"
LOCK = "LOCK"
# The files an engine folder's writers create: generation arrays ``<name>.<6 digits>.npy`` and hidden
# ``.<...>.tmp`` files. Writers retire only these, so a file of the user's in the folder is never deleted.
ARRAY_FILE = re.compile(r"^[a-z0-9_]+\.\d{6}\.npy$")
TEMP_FILE = re.compile(r"^\..+\.tmp$")
_CHUNK = 1 << 22
_NPY_HEADER_LOCK = threading.Lock()

try:  # POSIX advisory locks; Windows falls back to exclusive-create lock files.
    import fcntl
except ImportError:  # pragma: no cover - not on the CI platform
    fcntl = None


def format_version_for(codes_dtype: Any, pq: bool = False) -> int:
    """The format version a generation is written as: 5 with the pq codec, else 4 for uint32 codes, else 3."""
    if pq:
        return PQ_FORMAT_VERSION
    return WIDE_CODES_FORMAT_VERSION if np.dtype(codes_dtype) == np.dtype("<u4") else FORMAT_VERSION


def format_version_of(arrays: dict[str, ArrayEntry]) -> int:
    """The format version a generation with these arrays is written as (``format_version_for`` its codes and
    codec)."""
    codes = arrays.get("codes")
    return format_version_for(codes.dtype if codes is not None else "<u2", "pq_table" in arrays)


def fsync_dir(path: Path) -> None:
    """fsync a folder so that renames inside it are durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def file_crc32(path: Path) -> int:
    """CRC-32 of a whole file, read in chunks through the page cache (not mapped into RSS)."""
    crc = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK)
            if not block:
                return crc
            crc = zlib.crc32(block, crc)


@dataclass(frozen=True)
class ArrayEntry:
    """One array of a generation: its file, dtype, shape and the CRC-32 of the whole file."""

    file: str
    dtype: str
    shape: tuple[int, ...]
    crc32: int

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "dtype": self.dtype, "shape": list(self.shape), "crc32": self.crc32}

    @classmethod
    def from_json(cls, name: str, obj: Any) -> ArrayEntry:
        try:
            return cls(str(obj["file"]), str(np.dtype(obj["dtype"]).str), tuple(int(s) for s in obj["shape"]),
                       int(obj["crc32"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFormatError(f"manifest entry for array {name!r} is malformed ({exc!r})") from None


class NpyStreamWriter:
    """Write a .npy file of known dtype and shape chunk by chunk, computing its CRC-32 on the way.

    Nothing is memory-mapped, so a large array costs no resident memory while it is written.
    """

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, ...]):
        self.path = Path(path)
        self.dtype = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.row_shape = self.shape[1:]
        self.rows_expected = self.shape[0]
        self.rows_written = 0
        self._crc = 0
        self._f = open(self.path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        import io

        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, header)
        self._write(buf.getvalue())

    def _write(self, data: bytes | memoryview) -> None:
        self._crc = zlib.crc32(data, self._crc)
        self._f.write(data)

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {rows.shape[1:]} do not fit an array of rows {self.row_shape}")
        if self.rows_written + rows.shape[0] > self.rows_expected:
            raise ValueError(f"{self.path.name}: more rows than the {self.rows_expected} announced")
        self._write(memoryview(rows).cast("B"))
        self.rows_written += rows.shape[0]

    def close(self) -> int:
        """Flush, fsync and close; returns the CRC-32. Raises if fewer rows were written than announced."""
        if self.rows_written != self.rows_expected:
            self._f.close()
            raise ValueError(f"{self.path.name}: {self.rows_written} rows written, {self.rows_expected} announced")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        return self._crc

    def abort(self) -> None:
        try:
            self._f.close()
        finally:
            self.path.unlink(missing_ok=True)


def read_manifest(path: Path) -> dict[str, Any]:
    """Read and validate ``manifest.json`` of the index at ``path``."""
    path = Path(path)
    if not path.exists():
        raise IndexFormatError(f"no index at {str(path)!r}: the folder does not exist")
    if not path.is_dir():
        raise IndexFormatError(f"{str(path)!r} is a file, not an index folder")
    mpath = path / MANIFEST
    if not mpath.exists():
        raise IndexFormatError(
            f"no index at {str(path)!r}: {MANIFEST} is missing (a build that was interrupted before its "
            "commit leaves no index; build it again)")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{mpath} is not valid JSON ({exc}); the manifest is corrupted") from None
    return validate_manifest(manifest, where=str(mpath))


_REQUIRED = {"format": str, "format_version": int, "generation": int, "dim": int, "nbits": int, "nlist": int,
             "n_docs": int, "n_tokens": int, "next_id": int, "arrays": dict}


def validate_manifest(manifest: Any, where: str = MANIFEST) -> dict[str, Any]:
    """Check a parsed manifest's structure and version; raise IndexFormatError naming the problem."""
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"{where}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{where}: not a plaidx index (format {manifest.get('format')!r})")
    for key, typ in _REQUIRED.items():
        value = manifest.get(key)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise IndexFormatError(f"{where}: field {key!r} is missing or not a {typ.__name__}")
    version = manifest["format_version"]
    if version > NEWEST_FORMAT_VERSION:
        raise IndexFormatError(
            f"{where}: format version {version} is newer than this plaidx supports ({NEWEST_FORMAT_VERSION}); "
            "upgrade plaidx to open it")
    if version < 1:
        raise IndexFormatError(f"{where}: invalid format version {version}")
    for key in ("dim", "nbits", "nlist", "n_docs", "n_tokens", "next_id", "generation"):
        if manifest[key] < 0:
            raise IndexFormatError(f"{where}: field {key!r} is negative")
    for name, entry in manifest["arrays"].items():
        e = ArrayEntry.from_json(name, entry)
        if "/" in e.file or "\\" in e.file or e.file.startswith("."):
            raise IndexFormatError(f"{where}: array {name!r} names an invalid file {e.file!r}")
    if ("pq_table" in manifest["arrays"]) != (version == PQ_FORMAT_VERSION) and "codes" in manifest["arrays"]:
        raise IndexFormatError(f"{where}: a format {version} index "
                               + ("with" if "pq_table" in manifest["arrays"] else "without")
                               + " a pq_table array; only the pq residual codec (format 5) has one, so the index is "
                                 "inconsistent")
    if "codes" in manifest["arrays"]:
        dtype = ArrayEntry.from_json("codes", manifest["arrays"]["codes"]).dtype
        if dtype not in _CODE_DTYPES or version < _CODE_DTYPES[dtype] or dtype != code_dtype(manifest["nlist"]).str:
            raise IndexFormatError(
                f"{where}: codes stored as {dtype} in a format {version} index of nlist {manifest['nlist']}; "
                "codes must be uint16 (<u2) up to 65536 centroids and uint32 (<u4, format 4) above, so the "
                "index is inconsistent")
    return manifest


def advise_map(arr: Any, advice: str) -> bool:
    """madvise over the whole map of a memory-mapped array (``advice``: an ``mmap.MADV_*`` name). False where the
    array is not mapped or the platform lacks the advice; advice only, so errors are ignored too."""
    mapped, flag = getattr(arr, "_mmap", None), getattr(mmap_module, advice, None)
    if mapped is None or flag is None:
        return False
    try:
        mapped.madvise(flag)
    except (OSError, ValueError):
        return False
    return True


def load_array(path: Path, name: str, entry: ArrayEntry, mmap: bool = True, verify: bool = False) -> np.ndarray:
    """Open one array of a manifest, checking existence, header, dtype, shape and (optionally) CRC-32."""
    fpath = Path(path) / entry.file
    if not fpath.exists():
        raise FileNotFoundError(errno.ENOENT, f"array {name!r} of the index is missing", str(fpath))
    if verify:
        crc = file_crc32(fpath)
        if crc != entry.crc32:
            raise IndexFormatError(
                f"{fpath.name}: checksum mismatch (array {name!r} is corrupted: crc32 {crc:#010x}, "
                f"manifest says {entry.crc32:#010x}); restore the index from a backup or rebuild it"
                f"{_repair_hint(name)}")
    try:
        size = int(np.prod(entry.shape)) if entry.shape else 1
        with _NPY_HEADER_LOCK:  # numpy parses .npy headers with ast, not thread-safe on CPython 3.11
            arr = np.load(fpath, mmap_mode="r" if (mmap and size > 0) else None, allow_pickle=False)
    except FileNotFoundError:
        raise  # retired by a writer after we read the manifest: load_generation retries
    except OSError as exc:
        raise IndexFormatError(f"{fpath.name}: cannot read array {name!r} ({exc})") from None
    except Exception as exc:  # numpy's header parser raises ValueError, EOFError, SyntaxError, ...
        raise IndexFormatError(f"{fpath.name}: unreadable or truncated array {name!r} "
                               f"({type(exc).__name__}: {exc}); restore the index from a backup or rebuild it"
                               f"{_repair_hint(name)}") from None
    if arr.dtype.str != entry.dtype or tuple(arr.shape) != entry.shape:
        raise IndexFormatError(
            f"{fpath.name}: array {name!r} has dtype {arr.dtype.str} shape {tuple(arr.shape)}, "
            f"the manifest says {entry.dtype} {entry.shape}; the index is inconsistent: restore it from a backup "
            f"or rebuild it{_repair_hint(name)}")
    return arr


def load_generation(path: Path, verify: str = "structure", retries: int = 20) -> tuple[dict, dict[str, np.ndarray]]:
    """Read the current manifest and open its arrays.

    ``verify``: "none" checks headers and shapes only, "structure" also checks the CRC-32 of every array
    except the large ``residuals`` and kept ``vectors`` (which cannot make a kernel read out of bounds),
    "full" checks all.
    A writer may retire files between our manifest read and their open: then we reread and retry.
    """
    if verify not in ("none", "structure", "full"):
        raise ValueError(f"verify must be 'none', 'structure' or 'full', got {verify!r}")
    last_exc: Exception | None = None
    for _ in range(retries):
        manifest = read_manifest(path)
        try:
            arrays = {}
            for name, obj in manifest["arrays"].items():
                entry = ArrayEntry.from_json(name, obj)
                check = verify == "full" or (verify == "structure" and name not in ("residuals", "vectors"))
                arrays[name] = load_array(path, name, entry, verify=check)
            return manifest, arrays
        except FileNotFoundError as exc:
            last_exc = exc
            if read_manifest(path).get("generation") == manifest["generation"]:
                raise IndexFormatError(
                    f"index at {str(path)!r}: {exc.filename} is missing (named by generation "
                    f"{manifest['generation']}); the index is damaged: restore it from a backup or rebuild it"
                    f"{_repair_hint(name)}") from None
            time.sleep(0.01)
    raise IndexFormatError(f"index at {str(path)!r} kept changing while opening it ({last_exc})")


def _repair_hint(name: str) -> str:
    """How to recover from a damaged array that the index can do without (the rerank tier)."""
    if name in ("vectors", "vector_scales"):
        return ", or drop the rerank tier with plaidx.Index.drop_vectors(path) (the codes stay searchable)"
    return ""


def exchange_folders(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux ``renameat2`` with ``RENAME_EXCHANGE``), so that a reader never
    finds neither at ``b``; False where the system lacks it (the caller then renames twice)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0


class WriterLock:
    """The single-writer lock of an index folder (an advisory lock on ``LOCK``).

    ``wait``: seconds to wait for another writer to finish before IndexLockedError (0: fail at once).
    """

    def __init__(self, path: Path, wait: float = 0.0):
        self.path = Path(path)
        self.wait = wait
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        self.path.mkdir(parents=True, exist_ok=True)
        lpath = self.path / LOCK
        fd = os.open(str(lpath), os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            deadline = time.monotonic() + self.wait
            while not self._try_lock(fd):
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                try:
                    holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise IndexLockedError(
                    f"index at {str(self.path)!r} is being written by another writer (pid {holder}); only one "
                    "writer at a time: wait for it to finish, or close the other Index handle")
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    @staticmethod
    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def release(self) -> None:
        if self._fd is not None:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class WriterScope:
    """One write through a handle: its per-handle mutex, then the folder's :class:`WriterLock`.

    ``sync()`` runs with both held; it brings the handle up to the committed state on disk (another
    handle or process may have committed meanwhile) and returns what the write starts from, which
    ``with`` yields. Both are released on exit, and on any failure to enter.
    """

    def __init__(self, path: Path, mutex: threading.Lock, sync: Any):
        self.lock = WriterLock(path)
        self.mutex, self.sync = mutex, sync

    def __enter__(self) -> Any:
        self.mutex.acquire()
        try:
            self.lock.acquire()
        except BaseException:
            self.mutex.release()
            raise
        try:
            return self.sync()
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: Any) -> None:
        self.lock.release()
        self.mutex.release()


class Transaction:
    """New arrays for the next generation, then one atomic manifest switch.

    Use inside a held WriterLock. Arrays are written under temporary names and renamed to their final
    ``<name>.<generation>.npy`` names only at commit; an abort (or a crash) leaves only temporary files,
    which the next writer removes.
    """

    def __init__(self, path: Path, base: dict[str, Any] | None, inherit_arrays: bool = True):
        """``inherit_arrays``: start from the base generation's arrays (an update replaces some of them);
        False for a whole new generation (build, recluster), which names only the arrays it writes."""
        self.path = Path(path)
        self.base = base
        self.generation = (base["generation"] + 1) if base else 1
        self.entries: dict[str, ArrayEntry] = {}
        self._pending: list[tuple[Path, Path]] = []
        self._writers: list[NpyStreamWriter] = []
        if base and inherit_arrays:
            for name, obj in base["arrays"].items():
                self.entries[name] = ArrayEntry.from_json(name, obj)

    def _names(self, name: str) -> tuple[Path, Path]:
        final = self.path / f"{name}.{self.generation:06d}.npy"
        tmp = self.path / f".{name}.{self.generation:06d}.{os.getpid()}.tmp"
        return tmp, final

    def stream(self, name: str, dtype: Any, shape: tuple[int, ...]) -> NpyStreamWriter:
        """A writer for a large array; call ``finish(name, writer)`` once it is complete."""
        tmp, _ = self._names(name)
        writer = NpyStreamWriter(tmp, dtype, shape)
        self._writers.append(writer)
        return writer

    def finish(self, name: str, writer: NpyStreamWriter) -> None:
        crc = writer.close()
        self._writers.remove(writer)
        tmp, final = self._names(name)
        self.entries[name] = ArrayEntry(final.name, writer.dtype.str, writer.shape, crc)
        self._pending.append((tmp, final))

    def put(self, name: str, array: np.ndarray) -> None:
        """Write a whole array as this generation's ``name``."""
        array = np.asarray(array)
        if array.dtype.itemsize > 1:
            array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        writer = self.stream(name, array.dtype, array.shape)
        try:
            if array.ndim == 0:
                raise ValueError("scalar arrays are not stored")
            writer.append(array)
        except BaseException:
            writer.abort()
            self._writers.remove(writer)
            raise
        self.finish(name, writer)

    def commit(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Rename arrays into place, switch the manifest atomically, retire unreferenced files."""
        manifest = dict(self.base or {})
        manifest.update(fields)
        manifest.update({"format": FORMAT_NAME, "format_version": format_version_of(self.entries),
                         "generation": self.generation,
                         "updated_at": time.time(),
                         "arrays": {n: e.to_json() for n, e in sorted(self.entries.items())}})
        manifest.setdefault("created_at", manifest["updated_at"])
        validate_manifest(manifest)
        text = json.dumps(manifest, indent=1, sort_keys=True)  # a value JSON cannot hold fails before any rename
        mtmp = self.path / f".{MANIFEST}.{os.getpid()}.tmp"
        renamed: list[Path] = []
        try:
            for tmp, final in self._pending:
                os.replace(tmp, final)
                renamed.append(final)
            fsync_dir(self.path)
            with open(mtmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(mtmp, self.path / MANIFEST)  # the commit point
        except BaseException:  # not committed: this generation's files go (no manifest names them)
            for p in (*renamed, mtmp):
                p.unlink(missing_ok=True)
            raise
        fsync_dir(self.path)
        self._pending.clear()
        retire_unreferenced(self.path, manifest)
        return manifest

    def abort(self) -> None:
        for w in list(self._writers):
            w.abort()
        self._writers.clear()
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()


def is_own_file(name: str) -> bool:
    """Whether ``name`` is one an engine folder's writers create (its arrays, temp files, manifest, lock)."""
    return bool(ARRAY_FILE.match(name) or TEMP_FILE.match(name)) or name in (MANIFEST, LOCK)


def retire_unreferenced(path: Path, manifest: dict[str, Any] | None) -> list[str]:
    """Delete the array and temporary files of the index's own naming that ``manifest`` does not name; any other
    file in the folder is left alone. Call only under the lock.

    Readers that still map a retired file keep their view (POSIX unlink semantics).
    """
    keep = {obj["file"] for obj in manifest["arrays"].values()} if manifest else set()
    removed = []
    for p in Path(path).iterdir():
        if p.name in keep:
            continue
        if is_own_file(p.name) and p.name not in (MANIFEST, LOCK):
            try:
                p.unlink()
                removed.append(p.name)
            except OSError:  # pragma: no cover
                pass
    return removed


def verify_index(path: Path) -> list[str]:
    """Check every array named by the manifest against its CRC-32; returns the problems found."""
    problems: list[str] = []
    manifest = read_manifest(path)
    for name, obj in manifest["arrays"].items():
        entry = ArrayEntry.from_json(name, obj)
        try:
            load_array(path, name, entry, mmap=True, verify=True)
        except (IndexFormatError, FileNotFoundError) as exc:
            problems.append(str(exc))
    return problems


def dir_size(path: Path, manifest: dict[str, Any]) -> int:
    """Bytes on disk of the files one generation uses (arrays and manifest)."""
    total = (Path(path) / MANIFEST).stat().st_size
    for obj in manifest["arrays"].values():
        try:
            total += (Path(path) / obj["file"]).stat().st_size
        except OSError:
            pass
    return total
