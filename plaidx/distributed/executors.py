"""Where shard work runs: the in-process executor (the reference), and the door to the Ray one."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..engine import Index

EXECUTORS = ("local", "ray")


EXECUTOR_ENV = "PLAIDX_SHARDED_EXECUTOR"


def default_executor() -> str:
    """The executor of sharded indexes opened by the RAG layer, the CLI and the server: "local", or the
    value of ``PLAIDX_SHARDED_EXECUTOR`` ("ray": serve the shards from Ray actors; Ray must be connected or
    named by ``RAY_ADDRESS``)."""
    value = os.environ.get(EXECUTOR_ENV) or "local"
    if value not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={value!r}: expected one of {EXECUTORS}")
    return value


def check_executor(executor: Any) -> str:
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    return executor


class LocalRunner:
    """Build steps run one after another in this process (each uses the engine's threads). The stages of a
    ``ray.data.Dataset`` input still run on Ray's workers; its shards are written here."""

    name = "local"

    def parts(self, source: Any, ranges: list[tuple[int, int]]) -> list[Any]:
        from .steps import Part

        return [Part(source, lo, hi) for lo, hi in ranges]

    def map(self, fn: Callable[..., Any], jobs: list[tuple], fail_soft: bool = False) -> list[Any]:
        out = []
        for args in jobs:
            try:
                out.append(fn(*args))
            except Exception as exc:
                if not fail_soft:
                    raise
                out.append(exc)
        return out


class LocalSearch:
    """Shards searched in this process, through the handles the ShardedIndex holds.

    With ``num_threads=0`` (the default) and several CPU shards, the shards run side by side in a thread
    pool (the native search releases the GIL), each with an equal share of the cores: one OpenMP team per
    shard instead of every shard's team in turn, which on a busy machine avoids a barrier per shard.
    Results do not depend on the thread count.
    """

    name = "local"

    def __init__(self) -> None:
        self.indexes: list[Index] = []
        self._pool: ThreadPoolExecutor | None = None

    def sync(self, dirs: list[Path], indexes: list[Index]) -> None:
        self.indexes = list(indexes)

    def search(self, q: np.ndarray, k: int, jobs: list[dict[str, Any] | None], dirs: list[Path],
               indexes: list[Index]) -> list[Any]:
        """Per shard, ``Index.search(q, k, **job)`` (None where the job is None) of the given handles."""
        live = [s for s, job in enumerate(jobs) if job is not None]
        cores = os.cpu_count() or 1
        side_by_side = (len(live) > 1 and cores > 1
                        and all(jobs[s].get("num_threads", 0) == 0 and jobs[s].get("device") is None for s in live))
        if not side_by_side:
            return [None if job is None else indexes[s].search(q, k, **job) for s, job in enumerate(jobs)]
        width = min(len(live), cores)
        share = max(1, cores // width)
        if self._pool is None or self._pool._max_workers < width:
            self._pool = ThreadPoolExecutor(max_workers=width, thread_name_prefix="plaidx-shard")
        futures = {s: self._pool.submit(indexes[s].search, q, k, **{**jobs[s], "num_threads": share})
                   for s in live}
        return [futures[s].result() if s in futures else None for s in range(len(jobs))]

    def close(self) -> None:
        self.indexes = []
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def runner(executor: str, *, init: Any = False, retries: int = 3) -> Any:
    if executor == "ray":
        from .ray_backend import RayRunner

        return RayRunner(init=init, retries=retries)
    return LocalRunner()


def search_executor(executor: str, *, init: Any = False, replicas: int = 1, num_cpus: float = 0.5,
                    attempts: int = 3) -> Any:
    if executor == "ray":
        from .ray_backend import RaySearch

        return RaySearch(init=init, replicas=replicas, num_cpus=num_cpus, attempts=attempts)
    return LocalSearch()


__all__ = ["EXECUTORS", "EXECUTOR_ENV", "LocalRunner", "LocalSearch", "check_executor", "default_executor", "runner",
           "search_executor"]
