"""What the engine runners (run_plaidx.py and the peers' run_plaid.py, run_fastplaid.py) measure about their own
process and read from a cached collection. Standard library and numpy only: the peers import it from their own
virtual environments."""

from __future__ import annotations

import resource
from pathlib import Path


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak RSS of this process image (VmHWM): ru_maxrss keeps the parent's peak across fork + exec."""
    hwm = [ln for ln in open("/proc/self/status").read().splitlines() if ln.startswith("VmHWM:")]
    return int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """User + system CPU seconds of this process, all threads (robust to a busy machine, unlike wall time)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def open_values(coll: Path):
    """(shape, data offset) of a collection's values.npy, without keeping it memory-mapped."""
    import numpy as np

    m = np.load(coll / "values.npy", mmap_mode="r")
    shape, off = m.shape, int(m.offset)
    del m
    return shape, off


def read_rows(coll: Path, off: int, d: int, start: int, stop: int):
    """float32 (stop - start, d) rows of values.npy by plain file I/O: no mapped pages inflate this process's RSS."""
    import numpy as np

    return np.fromfile(coll / "values.npy", dtype=np.float32, count=(stop - start) * d,
                       offset=off + int(start) * d * 4).reshape(stop - start, d)
