"""The Ray executor: build steps as tasks, shard search actors (memory-mapped, restartable)."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..engine import Index
from ..errors import require
from .errors import ShardUnavailableError


def ray_module() -> Any:
    return require("ray", "ray", "executor='ray'")


def ensure_ray(init: Any) -> Any:
    """The ``ray`` module with a connected cluster; never starts one unless ``init`` asks for it.

    ``init``: False (a running Ray is required: connected already, or named by ``RAY_ADDRESS``), True
    (start a local one, listening on loopback only, usage statistics off, when none runs), or a dict of
    ``ray.init`` arguments (a local cluster still on loopback, usage statistics off).
    """
    import sys

    if init and not os.environ.get("RAY_ADDRESS") and "ray" not in sys.modules:
        # read by Ray at import: the node address of a cluster started here is the loopback one, and every
        # server of it (GCS, raylet, workers) binds there instead of on all interfaces
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray = ray_module()
    if ray.is_initialized():
        return ray
    if not init and os.environ.get("RAY_ADDRESS"):  # a cluster the user named: join it, start nothing
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
        ray.init(address=os.environ["RAY_ADDRESS"])
        return ray
    if not init:
        raise RuntimeError("executor='ray' needs a connected Ray cluster and plaidx does not start one on its own: "
                           "call ray.init() (or ray.init(address='auto') to join a running cluster) first, set "
                           "RAY_ADDRESS to a running cluster, or pass init=True to start a local one")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    kwargs = dict(init) if isinstance(init, dict) else {}
    local = not kwargs.get("address") and not os.environ.get("RAY_ADDRESS")
    if local:
        kwargs.setdefault("include_dashboard", False)
        consts = getattr(getattr(ray, "_private", None), "ray_constants", None)
        if consts is not None and hasattr(consts, "ENABLE_RAY_CLUSTER"):  # ray imported before we could set it
            consts.ENABLE_RAY_CLUSTER = False
    ray.init(**kwargs)
    if local:
        ips = {n.get("NodeManagerAddress") for n in ray.nodes()}
        if not ips <= {"127.0.0.1", "::1", "localhost"}:
            ray.shutdown()
            raise RuntimeError(f"the local Ray cluster plaidx started listens on {sorted(ips)}, not on loopback only; "
                               "it was shut down: start Ray yourself (ray.init(...)) and pass init=False")
    return ray


# ---------------------------------------------------------------------------------------------- build
class RayRunner:
    """Build steps as Ray tasks: the scan and the compression of each shard in parallel, the codec in one."""

    name = "ray"

    def __init__(self, init: Any = False, retries: int = 3, num_cpus: float = 1):
        self.ray = ensure_ray(init)
        self.retries = retries
        self.num_cpus = num_cpus

    def parts(self, source: Any, ranges: list[tuple[int, int]]) -> list[Any]:
        from .steps import Part

        # each shard's documents go to the object store once and serve its scan, sample and compression
        return [self.ray.put(Part(source, lo, hi).materialize()) for lo, hi in ranges]

    def map(self, fn: Callable[..., Any], jobs: list[tuple], fail_soft: bool = False) -> list[Any]:
        ray = self.ray
        task = ray.remote(fn).options(num_cpus=self.num_cpus, max_retries=self.retries)
        futures = [task.remote(*args) for args in jobs]
        out = []
        for f in futures:
            try:
                out.append(ray.get(f))
            except Exception as exc:
                if not fail_soft:
                    for g in futures:
                        ray.cancel(g)
                    raise
                out.append(exc)
        return out


# ---------------------------------------------------------------------------------------------- search
class ShardServer:
    """One shard opened memory-mapped inside a Ray actor; a restart re-runs this constructor (a reopen)."""

    def __init__(self, path: str):
        self.index = Index.open(path, verify="none")

    def search(self, q: np.ndarray, k: int, job: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(q, k, **job)

    def pid(self) -> int:
        return os.getpid()


class RaySearch:
    """Shards searched by Ray actors (``replicas`` per shard), the query put in the object store once."""

    name = "ray"
    start_wait_s = 60.0  # new actors must be running within this, or the open fails (never a hung search)

    def __init__(self, init: Any = False, replicas: int = 1, num_cpus: float = 0.5, attempts: int = 3):
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"replicas must be a positive integer, got {replicas!r}")
        self.ray = ensure_ray(init)
        self.replicas, self.num_cpus = replicas, num_cpus
        self.attempts = attempts
        self.restart_wait_s = 30.0
        self.actor_cls = self.ray.remote(ShardServer).options(num_cpus=num_cpus, max_restarts=-1,
                                                              max_task_retries=0)
        self.actors: dict[str, list[Any]] = {}
        self.order: list[str] = []
        self._turn = itertools.count()

    def sync(self, dirs: list[Path], indexes: list[Index]) -> None:
        """Start actors for shard folders new to this handle; end those of folders no longer named."""
        names = [str(d) for d in dirs]
        for old in set(self.actors) - set(names):
            for a in self.actors.pop(old):
                self.ray.kill(a)
        started = []
        for n in names:
            if n not in self.actors:
                self.actors[n] = [self.actor_cls.remote(n) for _ in range(self.replicas)]
                started += self.actors[n]
        self.order = names
        if started:
            self._await_start(started)

    def _await_start(self, actors: list[Any]) -> None:
        """Wait until ``actors`` run; a ShardUnavailableError saying what to change when the cluster cannot place
        them all (Ray would otherwise queue a search on an unplaced actor forever)."""
        refs = [a.pid.remote() for a in actors]
        _, waiting = self.ray.wait(refs, num_returns=len(refs), timeout=self.start_wait_s)
        if waiting:
            shards, have = len(self.actors), self.ray.cluster_resources().get("CPU", 0)
            self.close()
            raise ShardUnavailableError(
                f"{len(waiting)} of {len(refs)} search actors did not start within {self.start_wait_s:.0f} s: "
                f"{shards} shards x {self.replicas} replicas x {self.num_cpus} CPU need "
                f"{shards * self.replicas * self.num_cpus:g} CPUs and the cluster has {have:g}; open with fewer "
                "replicas or a smaller actor_cpus, or add nodes")

    def search(self, q: np.ndarray, k: int, jobs: list[dict[str, Any] | None], dirs: list[Path],
               indexes: list[Index]) -> list[Any]:
        """Per shard, the search job run by one of the actors of ``dirs[s]``; retried on another replica
        (or the restarted actor) when its actor dies, ``attempts`` times in all."""
        ray = self.ray
        names = [str(d) for d in dirs]
        missing = [n for n in names if n not in self.actors]
        if missing:
            raise ShardUnavailableError(f"no search actors for {missing[0]}: the handle moved to another generation "
                                        "during this search; search again")
        q_ref = ray.put(q)  # sent once, read by every shard from the object store
        turn = next(self._turn)
        groups = [self.actors[n] for n in names]
        pending = {s: 0 for s, job in enumerate(jobs) if job is not None}
        futures = {s: self._call(groups[s], turn, q_ref, k, jobs[s]) for s in pending}
        out: list[Any] = [None] * len(jobs)
        while futures:
            s, f = futures.popitem()
            try:
                out[s] = ray.get(f)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                pending[s] += 1
                if pending[s] >= self.attempts:
                    raise ShardUnavailableError(
                        f"shard {s} ({names[s]}) did not answer after {pending[s]} attempts ({exc}); no "
                        "partial result is returned: check the Ray cluster and search again") from exc
                group = groups[s]
                nxt = group[(turn + pending[s]) % len(group)]
                ray.wait([nxt.pid.remote()], timeout=self.restart_wait_s)  # a restarting actor: let it reopen
                futures[s] = self._call(group, turn + pending[s], q_ref, k, jobs[s])
        return out

    @staticmethod
    def _call(group: list[Any], turn: int, q_ref: Any, k: int, job: dict[str, Any]) -> Any:
        return group[turn % len(group)].search.remote(q_ref, k, job)

    def actor_pids(self) -> list[list[int]]:
        """Process ids of each shard's actors (for tests and diagnostics)."""
        return [self.ray.get([a.pid.remote() for a in self.actors[n]]) for n in self.order]

    def close(self) -> None:
        for group in self.actors.values():
            for a in group:
                try:
                    self.ray.kill(a)
                except Exception:  # the cluster may already be gone
                    pass
        self.actors.clear()


__all__ = ["RayRunner", "RaySearch", "ShardServer", "ensure_ray", "ray_module"]
