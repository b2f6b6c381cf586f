"""A ``ray.data.Dataset`` build input: scanned, sampled, encoded and compressed by stages on the workers."""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any

import numpy as np

from ..engine import Index
from ..engine.clustering import Assigner
from ..engine.codec import code_dtype
from ..engine.inputs import as_document
from .steps import fixed_threads, probe_positions, write_shard

_BATCH_DOCS = 64  # documents per map_batches call: one encoder batch, and enough tokens for BLAS assignment


def is_dataset(x: Any) -> bool:
    return type(x).__module__.startswith("ray.data") and hasattr(x, "map_batches")


class DatasetInput:
    """The documents of a ``ray.data.Dataset``: a column of embeddings, or of texts that the workers encode.

    Every pass over the rows is a ``map_batches`` stage on the workers that read the blocks (in input
    order: global ids are positions). The driver receives a 16-byte key (a hash of the document) and a
    token count per document, and the embeddings of the few documents it asks for (the codec's sample,
    each shard's probe). The object store holds the compressed collection (codes, packed residuals and
    counts), which the shard writers read; the embeddings of the whole collection are never held there.
    """

    def __init__(self, ds: Any, *, model: Any, text_column: str, embedding_column: str, concurrency: int,
                 num_gpus: float):
        from .ray_backend import ray_module

        ray = ray_module()
        # global ids are positions: every pass must see the rows in input order (the context a dataset was
        # created with is the one its passes run with, shared by the datasets derived from it)
        ds.context.execution_options.preserve_order = True
        columns = list(ds.columns() or [])
        if embedding_column in columns:
            if model is not None:
                raise ValueError(f"the dataset already has embeddings ({embedding_column!r}); drop model=")
            self.column, self.texts = embedding_column, False
        elif text_column in columns:
            self.column, self.texts = text_column, True
        else:
            raise ValueError(f"the dataset has neither {embedding_column!r} (embeddings) nor {text_column!r} (texts) "
                             f"columns (it has {columns}); name them with embedding_column= or text_column=")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"encode_concurrency must be a positive integer, got {concurrency!r}")
        self.rows = ds.select_columns([self.column])
        self.model = model
        if self.texts:
            self.stage = {"concurrency": concurrency, "num_gpus": num_gpus or None}
        else:  # compression alone: up to one actor per CPU of the cluster
            self.stage = {"concurrency": (1, max(1, int(ray.cluster_resources().get("CPU", 1))))}
        self.keys: np.ndarray | None = None  # uint64 (n_docs, 2)
        self.lengths: np.ndarray | None = None  # int64 (n_docs,), None for texts (known once encoded)

    @property
    def encoder(self) -> str | None:
        """What turns the texts into embeddings (part of the build plan), None for embeddings."""
        if not self.texts:
            return None
        m = self.model
        return "default" if m is None else str(m) if isinstance(m, (str, os.PathLike)) else type(m).__name__

    def _map(self, stage: type, **kwargs: Any) -> Any:
        args = {"column": self.column, "texts": self.texts, "model": self.model if self.texts else None, **kwargs}
        if stage is _Compress or (self.texts and stage is _Pick):  # a model or a codec: loaded once per actor
            return self.rows.map_batches(stage, fn_constructor_kwargs=args, batch_size=_BATCH_DOCS,
                                         batch_format="numpy", **self.stage)
        # a stateless stage runs as tasks (fused with the read: no actor to start)
        return self.rows.map_batches(functools.partial(_stateless, stage, args), batch_size=_BATCH_DOCS,
                                     batch_format="numpy")

    def count(self) -> int:
        """Number of documents; scans the dataset once (keys, token counts of embeddings, one dimension)."""
        if self.keys is None:
            keys, lengths, dims = [], [], []
            for b in self._map(_Scan).iter_batches(batch_format="numpy", batch_size=None):
                keys.append(b["key"])
                lengths.append(b["n_tokens"])
                dims.append(b["dim"])
            if not keys:
                raise ValueError("the dataset is empty; pass at least one document")
            self.keys = np.concatenate(keys).astype(np.uint64).reshape(-1, 2)
            if not self.texts:
                dim = np.concatenate(dims)
                if (dim != dim[0]).any():
                    i = int(np.flatnonzero(dim != dim[0])[0])
                    raise ValueError(f"documents[{i}] has dimension {dim[i]}, documents[0] has {dim[0]}: every "
                                     "embedding of the dataset must have the same dimension")
                self.lengths = np.concatenate(lengths).astype(np.int64)
        return int(self.keys.shape[0])

    def scan(self, ranges: list[tuple[int, int]]) -> tuple[np.ndarray | None, list[str]]:
        """Token counts (None for texts) and a fingerprint of each range's documents."""
        self.count()
        fps = []
        for lo, hi in ranges:
            h = hashlib.blake2b(self.keys[lo:hi].tobytes(), digest_size=16)
            if self.lengths is not None:
                h.update(self.lengths[lo:hi].tobytes())
            fps.append(h.hexdigest())
        return self.lengths, fps

    def take(self, positions: np.ndarray) -> list[np.ndarray]:
        """The float32 embeddings of the documents at ``positions``, in that order (texts encoded on the workers)."""
        self.count()
        pos = np.asarray(positions, dtype=np.int64)
        if pos.size == 0:
            return []
        want = {bytes(k) for k in self.keys[pos]}
        got: dict[bytes, np.ndarray] = {}
        for row in self._map(_Pick, want=sorted(want)).iter_rows():
            got[bytes(np.asarray(row["key"], np.uint64))] = np.asarray(row["embedding"], np.float32)
        return [got[bytes(k)] for k in self.keys[pos]]

    def write(self, run: Any, jobs: list[tuple[int, str, dict[str, Any]]], ranges: list[tuple[int, int]],
              codec_dir: str, seed: int, batch_tokens: int, threads: int | None) -> list[Any]:
        """Compress on the workers, then write the shards ``jobs`` names ((shard, folder, metadata) each)
        from the compressed rows; per job its counts or the exception that stopped it.

        On a resumed build the stage encodes and compresses only the documents of unfinished shards (and
        any document with the same content as one of them); the others come back as empty rows.
        """
        self.count()
        todo = [s for s, _, _ in jobs]
        keep = None
        if len(todo) < len(ranges):
            keep = np.unique(np.concatenate([self.keys[ranges[s][0]:ranges[s][1], 0] for s in todo]))
        compressed = self._map(_Compress, codec_dir=codec_dir, keep=keep, threads=threads).materialize()
        n_tokens = np.concatenate([b["n_tokens"] for b in compressed.select_columns(["n_tokens"]).iter_batches(
            batch_format="numpy", batch_size=None)]).astype(np.int64)
        parts = compressed.split_at_indices([lo for lo, _ in ranges[1:]])
        probes = {s: ranges[s][0] + probe_positions(n_tokens[ranges[s][0]:ranges[s][1]], seed) for s in todo}
        allpos = np.concatenate([probes[s] for s in todo])
        embs = dict(zip(allpos.tolist(), self.take(allpos)))
        out = []
        for s, sdir, meta in jobs:
            lo, hi = ranges[s]
            probe = {int(p) - lo: embs[int(p)] for p in probes[s]}
            out.append((sdir, parts[s], n_tokens[lo:hi], probe, codec_dir, seed, batch_tokens, meta, threads))
        return run.map(write_shard, out, fail_soft=True)


def _key(value: Any, texts: bool) -> np.ndarray:
    """uint64 (2,): a 16-byte hash of a text or of a document's float32 embeddings (shape included)."""
    h = hashlib.blake2b(digest_size=16)
    if texts:
        h.update(str(value).encode("utf-8"))
    else:
        h.update(np.array(value.shape, np.int64).tobytes())
        h.update(value.tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint64)


def _stateless(stage: type, args: dict[str, Any], batch: dict[str, Any]) -> dict[str, np.ndarray]:
    return stage(**args)(batch)


class _Stage:
    """A map_batches stage over one column: hashes its values, and turns them into float32 (n_tokens_i, d)
    documents (texts through one model per worker, loaded on first use)."""

    def __init__(self, column: str, texts: bool, model: Any):
        self.column, self.texts, self.model_arg, self.model = column, texts, model, None

    def values(self, batch: dict[str, Any]) -> list[Any]:
        col = batch[self.column]
        if self.texts:
            return [str(t) for t in col]
        return [as_document(x, None, f"a document of the dataset's column {self.column!r}") for x in col]

    def documents(self, values: list[Any]) -> list[np.ndarray]:
        if not self.texts:
            return values
        if self.model is None:
            from ..encoder import ColBERT

            m = self.model_arg
            self.model = ColBERT.from_pretrained(m) if m is None or isinstance(m, (str, os.PathLike)) else m
        return [as_document(e, None, "an encoded text") for e in
                self.model.encode_documents(values, show_progress_bar=False)]


class _Scan(_Stage):
    """Per document: its key, token count and dimension (-1 for texts: known once encoded)."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        values = self.values(batch)
        n = len(values)
        keys = np.array([_key(v, self.texts) for v in values], np.uint64).reshape(n, 2)
        shape = np.full((n, 2), -1, np.int64) if self.texts else np.array([v.shape for v in values], np.int64)
        return {"key": keys, "n_tokens": shape[:, 0].copy(), "dim": shape[:, 1].copy()}


class _Pick(_Stage):
    """The documents whose keys are asked for, as embeddings (only those texts are encoded)."""

    def __init__(self, column: str, texts: bool, model: Any, want: list[bytes]):
        super().__init__(column, texts, model)
        self.want = set(want)

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        values = self.values(batch)
        keys = [_key(v, self.texts) for v in values]
        mine = [i for i, k in enumerate(keys) if k.tobytes() in self.want]
        docs = self.documents([values[i] for i in mine])
        emb = np.empty(len(docs), dtype=object)
        emb[:] = docs
        return {"key": np.array([keys[i] for i in mine], np.uint64).reshape(-1, 2), "embedding": emb}


class _Compress(_Stage):
    """Documents encoded (texts) and compressed against the codec: per document its codes, uint8
    packed residuals, token count and residual norm sum. Documents whose key's first half is not in
    ``keep`` (sorted uint64, when given) come back empty, neither encoded nor compressed."""

    def __init__(self, column: str, texts: bool, model: Any, codec_dir: str, keep: np.ndarray | None,
                 threads: int | None):
        super().__init__(column, texts, model)
        self.codec = Index.open(codec_dir, verify="none")._snap.codec
        self.assigner = Assigner(self.codec.centroids)
        self.code_dtype = code_dtype(self.codec.centroids.shape[0])
        self.keep, self.threads = keep, threads

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        values = self.values(batch)
        n = len(values)
        mine = list(range(n))
        if self.keep is not None:
            first = np.array([_key(v, self.texts)[0] for v in values], np.uint64)
            hit = np.searchsorted(self.keep, first)
            mine = np.flatnonzero(self.keep[np.minimum(hit, self.keep.size - 1)] == first).tolist()
        docs = [as_document(d, self.codec.dim, "a document of the dataset")
                for d in self.documents([values[i] for i in mine])]
        pb = self.codec.packed_dim
        codes = np.empty(n, dtype=object)
        residuals = np.empty(n, dtype=object)
        codes[:] = [np.zeros(0, self.code_dtype)] * n
        residuals[:] = [np.zeros((0, pb), np.uint8)] * n
        n_tokens = np.zeros(n, np.int64)
        norms = np.zeros(n, np.float64)
        if docs:
            x = np.concatenate(docs)
            with fixed_threads(self.threads):
                c = self.assigner.assign(x)
                packed, norm = self.codec.compress(x, c)
            bounds = np.cumsum([0] + [d.shape[0] for d in docs])
            for j, i in enumerate(mine):
                lo, hi = int(bounds[j]), int(bounds[j + 1])
                codes[i], residuals[i] = c[lo:hi], packed[lo:hi]
                n_tokens[i] = hi - lo
                norms[i] = float(norm[lo:hi].sum(dtype=np.float64))
        return {"codes": codes, "residuals": residuals, "n_tokens": n_tokens, "norm": norms}


__all__ = ["DatasetInput", "is_dataset"]
