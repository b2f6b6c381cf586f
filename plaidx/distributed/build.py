"""Sharded build: scan, train one codec on a sample of the whole collection, compress shards, commit; resumable."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import WriterLock, fsync_dir
from ..engine.build import Spill, check_build_args, check_metadata
from ..engine.clustering import default_kmeans_sample, default_nlist
from ..engine.codec import check_residual_codec, default_residual_codec
from ..engine.inputs import iter_documents
from ..engine.storage import MANIFEST
from .errors import ShardBuildError, ShardFormatError
from .executors import check_executor, runner
from .manifest import (
    PLAN_FILE,
    SHARDED_MANIFEST,
    codec_dir_name,
    codec_hash,
    engine_fields,
    named_dirs,
    read_sharded,
    shard_dir_name,
    write_sharded,
)
from .pipeline import DatasetInput, is_dataset
from .sharded import ShardedIndex
from .steps import SHARD_KEY, build_shard, scan_part, take_rows, train_codec

_SPILL = ".input.spill.tmp"


# ---------------------------------------------------------------------------------------------- build
def build(path: str | os.PathLike, documents: Any, n_shards: int, nbits: int = 2, seed: int = 0,
          executor: str = "local", *, nlist: int | None = None, kmeans_niters: int = 4, kmeans: str = "auto",
          kmeans_sample: int | None = None, batch_tokens: int = 1 << 16, overwrite: bool = False,
          metadata: dict[str, Any] | None = None, model: Any = None, text_column: str = "text",
          embedding_column: str = "embedding", encode_concurrency: int = 1, num_gpus: float = 0,
          retries: int = 3, init: Any = False, replicas: int = 1, actor_cpus: float = 0.5,
          threads: int | None = None, residual_codec: str | None = None) -> Any:
    """Build a sharded index: one codec trained on a sample of the whole collection, shards compressed apart.

    Parameters
    ----------
    path : the folder to create (or a sharded index to replace, with ``overwrite=True``).
    documents : what :meth:`plaidx.Index.build` takes (float32/float16 (n_tokens_i, d) arrays, numpy or
        torch), or a ``ray.data.Dataset`` with a column ``embedding_column`` of such arrays, or a column
        ``text_column`` of strings encoded on the workers with ``model`` (a plaidx model name or path, or a
        model object; ``None``: the default model). Global document ids are positions in this input.
    n_shards : number of shards; shard s holds the s-th of ``n_shards`` contiguous ranges of documents.
    nbits, seed, nlist, kmeans_niters, kmeans, kmeans_sample, batch_tokens, residual_codec : as in ``Index.build``;
        ``nlist`` defaults to ``default_nlist`` of the whole collection's tokens.
    executor : "local" (shards written one after another in this process) or "ray" (one Ray task per
        shard; the codec is trained in one task). A Ray build equals a local one with the same seed. A
        dataset's stages run on Ray's workers with either.
    overwrite : replace an existing sharded index (one atomic switch; readers keep the old one open).
    metadata : JSON-serialisable dict stored in the sharded manifest and every shard's.
    retries : Ray retries of a task whose worker died.
    init : for ``executor="ray"`` without a running Ray: True (or a dict of ``ray.init`` arguments) starts a
        local one; False (default) raises instead of starting a cluster behind your back.
    replicas, actor_cpus : the returned handle's Ray search actors (see :meth:`ShardedIndex.open`).
    threads : BLAS/OpenMP threads of the codec training and of each shard's compression, wherever they run
        (default: this machine's core count). Builds with the same seed and threads are byte-identical
        in every executor; k-means sums in another order with another thread count.
    encode_concurrency, num_gpus : the actors that encode a dataset's texts (each loads ``model`` once) and
        the GPUs each holds.

    A ``ray.data.Dataset`` is read by ``map_batches`` stages on the workers, in input order. One stage
    encodes (texts) and compresses each document against the codec: only compressed rows (uint16 codes,
    uint8 packed residuals, a token count and a residual norm per document) are materialised in the object
    store and read by the shard writers. Embeddings travel only for the codec's sample and for each shard's
    probe (``PROBE_TOKENS`` tokens for its residual statistics). Texts have no token count before they are
    encoded: the codec sample's seeded order is encoded a batch at a time, a pilot of 256 documents first,
    whose mean token count times the number of documents stands for the collection's tokens in the default
    ``nlist`` and k-means sample size; the sample is the shortest prefix of that order holding the tokens
    it needs, as for embeddings (the manifest keeps the estimate and the real count). An embeddings
    dataset gives the shards a local build of the same arrays gives, byte for byte.

    If the build is interrupted (a crash, a killed worker or driver), calling ``build`` again with the same
    arguments resumes it: the codec and the shards already finished are kept, the others are redone (for a
    dataset, its stage reads every row again but encodes and compresses only the documents of unfinished
    shards). Returns the opened :class:`ShardedIndex`.
    """
    path = Path(path)
    check_executor(executor)
    if isinstance(n_shards, bool) or not isinstance(n_shards, (int, np.integer)) or n_shards < 1:
        raise ValueError(f"n_shards must be a positive integer, got {n_shards!r}")
    n_shards = int(n_shards)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    nbits, nlist, kmeans_niters, batch_tokens, seed, kmeans_sample = check_build_args(
        nbits, nlist, kmeans_niters, batch_tokens, kmeans, seed=seed, kmeans_sample=kmeans_sample)
    metadata = check_metadata(metadata)
    check_residual_codec(residual_codec, nbits)
    _check_target(path, overwrite)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    threads = threads or os.cpu_count() or 1
    run = runner(executor, init=init, retries=retries)
    with WriterLock(path):
        current = read_sharded(path) if (path / SHARDED_MANIFEST).exists() else None
        inp, spill = _source(path, documents, run, model, text_column, embedding_column, encode_concurrency,
                             num_gpus)
        try:
            committed = _build_locked(path, inp, n_shards, run, current, nbits=nbits, seed=seed,
                                      nlist=nlist, kmeans_niters=kmeans_niters, kmeans=kmeans,
                                      kmeans_sample=kmeans_sample, batch_tokens=batch_tokens,
                                      metadata=metadata, threads=threads,
                                      residual_codec=residual_codec)
        finally:
            if spill is not None:
                spill.close()
        _retire(path, committed)
    return ShardedIndex.open(path, executor=executor, init=init, replicas=replicas, actor_cpus=actor_cpus)


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{str(path)!r} exists and is a file; choose a folder path for the sharded index")
    if (path / MANIFEST).exists():
        raise FileExistsError(f"{str(path)!r} holds an ordinary (unsharded) plaidx index; choose another folder")
    if (path / SHARDED_MANIFEST).exists():
        if not overwrite:
            raise FileExistsError(f"a sharded index already exists at {str(path)!r}; pass overwrite=True to replace "
                                  "it or use ShardedIndex.open(path).add(...) to extend it")
        return
    if path.is_dir():
        foreign = [p.name for p in path.iterdir()
                   if not (p.name in ("LOCK", PLAN_FILE) or p.name.startswith((".", "shard-", "codec.")))]
        if foreign:
            raise FileExistsError(f"{str(path)!r} is a non-empty folder that is not a sharded plaidx index (it "
                                  f"holds {foreign[:3]}); choose an empty or new folder")


def _source(path: Path, documents: Any, run: Any, model: Any, text_column: str, embedding_column: str,
            encode_concurrency: int, num_gpus: float) -> tuple[Any, Spill | None]:
    """The build's input: a :class:`DatasetInput` for a ``ray.data.Dataset``, else an :class:`_ArrayInput` over
    a random-access source (a sequence, or the input spilled to disk)."""
    if is_dataset(documents):
        return DatasetInput(documents, model=model, text_column=text_column, embedding_column=embedding_column,
                            concurrency=encode_concurrency, num_gpus=num_gpus), None
    if model is not None:
        raise TypeError("model= encodes the texts of a ray.data.Dataset; for other inputs pass embeddings")
    docs_iter, count = iter_documents(documents)
    if count is not None:
        if not isinstance(documents, Sequence) and hasattr(documents, "ndim"):
            documents = list(docs_iter)
        return _ArrayInput(run, documents), None
    for stale in path.glob(f"{_SPILL}*"):
        stale.unlink()
    spill = Spill(path / f"{_SPILL}.{os.getpid()}", docs_iter, False)
    return _ArrayInput(run, spill), spill


class _ArrayInput:
    """Documents as arrays in this process: each shard's part is read where its step runs (for Ray, put in
    the object store once and read there by its scan, its share of the codec sample and its compression)."""

    encoder = None

    def __init__(self, run: Any, source: Any):
        self.run, self.source = run, source
        self.parts: list[Any] = []
        self.ranges: list[tuple[int, int]] = []

    def count(self) -> int:
        return len(self.source)

    def scan(self, ranges: list[tuple[int, int]]) -> tuple[np.ndarray, list[str]]:
        self.ranges, self.parts = ranges, self.run.parts(self.source, ranges)
        scans = self.run.map(scan_part, [(p, lo) for p, (lo, _) in zip(self.parts, ranges)])
        return np.concatenate([ln for ln, _ in scans]), [fp for _, fp in scans]

    def take(self, pos: np.ndarray) -> list[np.ndarray]:
        """The documents at ``pos``, in that order (each part returns its own)."""
        bounds = np.array([lo for lo, _ in self.ranges] + [self.ranges[-1][1]])
        owner = np.searchsorted(bounds, pos, side="right") - 1
        jobs, which = [], []
        for s in range(len(self.parts)):
            mine = np.sort(pos[owner == s])
            if mine.size:
                jobs.append((self.parts[s], mine - self.ranges[s][0]))
                which.append(mine)
        got: dict[int, np.ndarray] = {}
        for mine, rows in zip(which, self.run.map(take_rows, jobs)):
            got.update(zip(mine.tolist(), rows))
        return [got[int(p)] for p in pos]

    def write(self, run: Any, jobs: list[tuple[int, str, dict[str, Any]]], ranges: list[tuple[int, int]],
              codec_dir: str, seed: int, batch_tokens: int, threads: int | None) -> list[Any]:
        return run.map(build_shard, [(sdir, self.parts[s], codec_dir, seed, batch_tokens, meta, threads)
                                     for s, sdir, meta in jobs], fail_soft=True)


def _ranges(n_docs: int, n_shards: int) -> list[tuple[int, int]]:
    bounds = [n_docs * s // n_shards for s in range(n_shards + 1)]
    return [(bounds[s], bounds[s + 1]) for s in range(n_shards)]


def _sample_target(nlist: int, n_tokens: int, kmeans_sample: int | None) -> int:
    """Tokens of the documents that train the codec: the k-means sample plus about a fifth more, held out
    by ``Index.build`` to train the codebooks."""
    return int((kmeans_sample or default_kmeans_sample(nlist, n_tokens)) * 1.25) + 4096


def _prefix(lengths: np.ndarray, target: int) -> int:
    """How many of these documents (in order) it takes to reach ``target`` tokens (all when they fall short)."""
    return min(int(np.searchsorted(np.cumsum(lengths), target)) + 1, lengths.size)


class _TextSample:
    """The codec sample of texts, whose token counts are known only once encoded: the documents in a seeded
    random order, encoded a batch at a time (a pilot of ``PILOT_DOCS`` first, whose mean token count times
    the number of documents estimates the collection's tokens for the default nlist and sample size)."""

    PILOT_DOCS = 256

    def __init__(self, inp: Any, order: np.ndarray):
        self.inp, self.order = inp, order
        self.docs = inp.take(order[: self.PILOT_DOCS])

    def estimate(self) -> int:
        return max(1, round(float(np.mean([d.shape[0] for d in self.docs])) * self.order.size))

    def upto(self, target: int) -> list[np.ndarray]:
        """The shortest prefix of the order that holds ``target`` tokens (the whole collection at most)."""
        have = sum(d.shape[0] for d in self.docs)
        while have < target and len(self.docs) < self.order.size:
            more = int((target - have) / (have / len(self.docs)) * 1.1) + 16
            new = self.inp.take(self.order[len(self.docs): len(self.docs) + more])
            self.docs += new
            have += sum(d.shape[0] for d in new)
        return self.docs[: _prefix(np.array([d.shape[0] for d in self.docs]), target)]


def _build_locked(path: Path, inp: Any, n_shards: int, run: Any, current: dict[str, Any] | None,
                  *, nbits: int, seed: int, nlist: int | None, kmeans_niters: int, kmeans: str,
                  kmeans_sample: int | None, batch_tokens: int, metadata: dict[str, Any],
                  threads: int, residual_codec: str | None = None) -> dict[str, Any]:
    n_docs = inp.count()
    if n_docs < n_shards:
        raise ValueError(f"{n_docs} documents cannot fill {n_shards} shards; use at most {n_docs} shards")
    ranges = _ranges(n_docs, n_shards)
    lengths, fingerprints = inp.scan(ranges)
    order = np.random.default_rng(seed).permutation(n_docs)  # the codec sample is a prefix of this order
    texts = None
    if lengths is None:
        texts = _TextSample(inp, order)
        n_tokens = texts.estimate()
    else:
        n_tokens = int(lengths.sum())
    nl = nlist if nlist is not None else default_nlist(n_tokens, nbits)
    # chosen for the whole collection (the codec index holds only a sample of it)
    residual_codec = residual_codec or default_residual_codec(nbits, n_tokens)
    params = {"n_shards": n_shards, "nbits": nbits, "seed": seed, "nlist": nl, "kmeans_niters": kmeans_niters,
              "kmeans": kmeans, "kmeans_sample": kmeans_sample, "batch_tokens": batch_tokens,
              "n_docs": n_docs, "n_tokens": n_tokens, "fingerprints": fingerprints, "metadata": metadata}
    if residual_codec != "scalar":  # (absent for the scalar codec: plans written before the pq codec still resume)
        params["residual_codec"] = residual_codec
    if inp.encoder is not None:
        params.update({"encoder": inp.encoder, "n_tokens_from": f"a pilot of {len(texts.docs)} documents"})
    plan = _resume_plan(path, params)
    if plan is None:
        gen = (current["generation"] if current else 0) + 1
        (path / PLAN_FILE).unlink(missing_ok=True)
        _retire(path, current)  # folders of an abandoned plan
        plan = {"generation": gen, "params": params, "codec_hash": None}
        _write_plan(path, plan)
    gen = plan["generation"]
    codec_dir = path / codec_dir_name(gen)
    chash = plan.get("codec_hash")
    if not (chash and (codec_dir / MANIFEST).is_file() and codec_hash(codec_dir) == chash):
        target = _sample_target(nl, n_tokens, kmeans_sample)
        sample = texts.upto(target) if texts else inp.take(order[: _prefix(lengths[order], target)])
        (chash,) = run.map(train_codec, [(str(codec_dir), sample, nbits, nl, kmeans_niters, seed,
                                          kmeans_sample or default_kmeans_sample(nl, n_tokens), kmeans,
                                          threads, residual_codec)])
        del sample
        plan["codec_hash"] = chash
        _write_plan(path, plan)
    del texts
    jobs, summaries = [], {}
    for s, (lo, hi) in enumerate(ranges):
        sdir = path / shard_dir_name(s, gen)
        tag = {"shard": s, "of": n_shards, "range": [lo, hi], "codec_hash": chash, "fingerprint": fingerprints[s]}
        done = _finished_shard(sdir, tag)
        if done is not None:
            summaries[s] = done
        else:
            jobs.append((s, str(sdir), {**metadata, SHARD_KEY: tag}))
    results = inp.write(run, jobs, ranges, str(codec_dir), seed, batch_tokens, threads) if jobs else []
    failed = []
    for (s, _, _), res in zip(jobs, results):
        if isinstance(res, BaseException):
            failed.append((s, res))
        else:
            summaries[s] = res
    if failed:
        s0, e0 = failed[0]
        raise ShardBuildError(f"{len(failed)} of {n_shards} shards failed (shards {[s for s, _ in failed]}; shard "
                              f"{s0}: {type(e0).__name__}: {e0}); the finished shards are kept: call build again "
                              "with the same arguments to resume") from e0
    shards = []
    for s, (lo, hi) in enumerate(ranges):
        sm = summaries[s]
        if sm["n_docs"] != hi - lo or sm["next_id"] != hi - lo:
            raise ShardFormatError(f"shard {s} holds {sm['n_docs']} documents, expected {hi - lo}")
        shards.append({"dir": shard_dir_name(s, gen), "n_docs": sm["n_docs"], "n_tokens": sm["n_tokens"],
                       "engine_generation": sm["engine_generation"], "runs": [[lo, 0, hi - lo]]})
    dim = int(engine_fields(codec_dir)["dim"])
    # writes to the old index while this build was paused may have moved past the plan's generation
    commit_gen = max(gen, (current["generation"] + 1) if current else gen)
    build_info = {k: v for k, v in params.items() if k not in ("fingerprints", "metadata")}
    if inp.encoder is not None:  # the estimate chose nlist; the manifest counts the tokens encoded
        build_info.update({"n_tokens_estimate": n_tokens, "n_tokens": sum(sh["n_tokens"] for sh in shards)})
    manifest = {"generation": commit_gen, "next_id": n_docs, "dim": dim, "nbits": nbits, "nlist": nl,
                "codec": {"dir": codec_dir.name, "hash": chash}, "routing": {"rule": "ranges"},
                "shards": shards, "metadata": metadata, "build": build_info}
    if current is not None:
        manifest["created_at"] = current.get("created_at")
    committed = write_sharded(path, manifest)
    (path / PLAN_FILE).unlink(missing_ok=True)
    fsync_dir(path)
    return committed


def _finished_shard(sdir: Path, tag: dict[str, Any]) -> dict[str, int] | None:
    """A shard folder's counts when it was committed for exactly this plan (else None: redo it)."""
    if not (sdir / MANIFEST).is_file():
        return None
    try:
        m = engine_fields(sdir)
    except Exception:  # a damaged shard is redone
        return None
    if (m.get("metadata") or {}).get(SHARD_KEY) != tag or codec_hash(sdir) != tag["codec_hash"]:
        return None
    return {"n_docs": int(m["n_docs"]) - int(m.get("n_deleted", 0)), "n_tokens": int(m["n_tokens"]),
            "engine_generation": int(m["generation"]), "next_id": int(m["next_id"])}


def _resume_plan(path: Path, params: dict[str, Any]) -> dict[str, Any] | None:
    try:
        plan = json.loads((path / PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(plan, dict) or plan.get("params") != json.loads(json.dumps(params)):
        return None
    if not isinstance(plan.get("generation"), int):
        return None
    return plan


def _write_plan(path: Path, plan: dict[str, Any]) -> None:
    tmp = path / f".{PLAN_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(plan, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path / PLAN_FILE)
    fsync_dir(path)


def _retire(path: Path, manifest: dict[str, Any] | None) -> None:
    """Remove shard and codec folders (and temporary files) that the committed manifest does not name.

    Only under the folder's lock, and never a folder an unfinished build plan names.
    """
    keep = named_dirs(manifest)
    try:
        plan = json.loads((path / PLAN_FILE).read_text(encoding="utf-8"))
        g = int(plan["generation"])
        keep |= {codec_dir_name(g), *(shard_dir_name(s, g) for s in range(int(plan["params"]["n_shards"])))}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for p in path.iterdir():
        if p.is_dir() and p.name.startswith(("shard-", "codec.")) and p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.endswith(".tmp") and p.name.startswith("."):
            p.unlink(missing_ok=True)


__all__ = ["build"]
