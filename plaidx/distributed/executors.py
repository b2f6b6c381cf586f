"""Where shard work runs: the in-process executor (the reference), and the door to the Ray one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..engine import Index

EXECUTORS = ("local", "ray")


def check_executor(executor: Any) -> str:
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    return executor


class LocalRunner:
    """Build steps run one after another in this process (each uses the engine's threads)."""

    name = "local"

    def count(self, source: Any) -> int:
        return int(source.count()) if hasattr(source, "iter_rows") else len(source)

    def parts(self, source: Any, ranges: list[tuple[int, int]]) -> list[Any]:
        from .steps import Part

        if hasattr(source, "iter_rows"):
            return source.split_at_indices([lo for lo, _ in ranges[1:]])
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

    def prepare_dataset(self, ds: Any, **kwargs: Any) -> Any:
        from .ray_backend import prepare_dataset

        return prepare_dataset(ds, **kwargs)


class LocalSearch:
    """Shards searched one after another in this process, through the handles the ShardedIndex holds."""

    name = "local"

    def __init__(self) -> None:
        self.indexes: list[Index] = []

    def sync(self, dirs: list[Path], indexes: list[Index]) -> None:
        self.indexes = list(indexes)

    def search(self, q: np.ndarray, k: int, jobs: list[dict[str, Any] | None]) -> list[Any]:
        return [None if job is None else self.indexes[s].search(q, k, **job) for s, job in enumerate(jobs)]

    def close(self) -> None:
        self.indexes = []


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


__all__ = ["EXECUTORS", "LocalRunner", "LocalSearch", "check_executor", "runner", "search_executor"]
