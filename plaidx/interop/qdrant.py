"""Export a plaidx index to a Qdrant multivector collection (MAX_SIM), and build a plaidx index back from one.

Each live document becomes one point: its decompressed token vectors (unit length, float16 or float32) as
a multivector under one named vector, created with ``MultiVectorConfig(comparator=MAX_SIM)``, dot product
and the HNSW graph off (``m=0``), so Qdrant's score of a query is the same ColBERT MaxSim plaidx computes
with ``exact=True``. The point id is the plaidx document id; payloads are supplied by the caller (the CLI
puts the document id, text and metadata of a RAG folder there). The collection's metadata records what
was exported (``{"plaidx": {...}}``), which :func:`import_collection` reads back.

Sizes: Qdrant stores what it is given, decompressed: 256 bytes per token at d = 128 in float16 (512 in
float32) against about 36 bytes per token for a 2-bit plaidx index (68 at 4 bits), so a collection is
about 7x (float16) or 14x (float32) the size of the 2-bit index.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Index
from ..engine.importing import build_with_ids
from ..errors import require

DEFAULT_VECTOR = "colbert"
MAX_FLOATS_PER_REQUEST = 1 << 21  # about 2M floats per upsert keeps a REST request well under 32 MB
DATATYPES = ("float16", "float32")


def _models() -> Any:
    return require("qdrant_client.models", "qdrant", "exporting to Qdrant")


def connect(*, path: str | os.PathLike | None = None, url: str | None = None, api_key: str | None = None,
            prefer_grpc: bool = False) -> Any:
    """A ``QdrantClient``: local mode on a folder (``path``, or ``":memory:"``) or a server (``url``;
    ``prefer_grpc`` sends the large multivector batches over gRPC instead of JSON)."""
    qc = require("qdrant_client", "qdrant", "exporting to Qdrant")
    if (path is None) == (url is None):
        raise ValueError("pass exactly one of path (local mode folder, or ':memory:') or url (a Qdrant server)")
    if url is not None:
        return qc.QdrantClient(url=url, api_key=api_key, prefer_grpc=prefer_grpc)
    if str(path) == ":memory:":
        return qc.QdrantClient(location=":memory:")
    return qc.QdrantClient(path=str(path))


def export_index(index: Any, client: Any, collection: str, *, vector_name: str = DEFAULT_VECTOR,
                 datatype: str = "float16", payloads: Callable[[np.ndarray], list[dict[str, Any]]] | None = None,
                 collection_metadata: dict[str, Any] | None = None, batch_tokens: int | None = None,
                 overwrite: bool = False, progress: bool = False) -> dict[str, Any]:
    """Write every live document of ``index`` (an :class:`Index` or a sharded one) into a new collection.

    Parameters
    ----------
    client : a ``qdrant_client.QdrantClient`` (see :func:`connect`).
    collection : name of the collection to create; an existing one is an error unless ``overwrite``.
    datatype : "float16" (half the size) or "float32", how Qdrant stores the vectors (local mode keeps
        what it is sent either way).
    payloads : called with int64 (n,) document ids of a batch, returns one JSON-serialisable dict per id;
        by default a point's payload is ``{"passage_id": id}``.
    batch_tokens : tokens per upsert request; default ``MAX_FLOATS_PER_REQUEST // d``.

    Returns a summary: points, tokens, bytes of vectors sent, batches.
    """
    models = _models()
    if datatype not in DATATYPES:
        raise ValueError(f"datatype must be one of {DATATYPES}, got {datatype!r}")
    if not isinstance(collection, str) or not collection:
        raise ValueError("collection must be a non-empty string")
    dim = int(index.dim)
    batch_tokens = int(batch_tokens or max(1, MAX_FLOATS_PER_REQUEST // dim))
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be positive, got {batch_tokens}")
    if client.collection_exists(collection):
        if not overwrite:
            raise FileExistsError(f"Qdrant collection {collection!r} already exists; pass overwrite=True "
                                  "(CLI: --overwrite) to replace it, or choose another name")
        client.delete_collection(collection)
    # "complete" turns true after the last point is written: a collection an interrupted export left is never read
    # back as the whole index
    meta = {"plaidx": {"vector_name": vector_name, "dim": dim, "nbits": int(index.nbits), "datatype": datatype,
                       "index_metadata": index.metadata, **(collection_metadata or {}), "complete": False}}
    client.create_collection(
        collection_name=collection,
        vectors_config={vector_name: models.VectorParams(
            size=dim, distance=models.Distance.DOT, datatype=getattr(models.Datatype, datatype.upper()),
            multivector_config=models.MultiVectorConfig(comparator=models.MultiVectorComparator.MAX_SIM),
            hnsw_config=models.HnswConfigDiff(m=0))},
        metadata=meta)
    ids = np.asarray(index.ids, dtype=np.int64)
    np_dtype = np.float16 if datatype == "float16" else np.float32
    stats = {"collection": collection, "points": 0, "tokens": 0, "vector_bytes": 0, "batches": 0,
             "dim": dim, "datatype": datatype}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(ids.size), desc="exporting", unit="doc")
    batch_ids: list[int] = []
    batch_vecs: list[np.ndarray] = []
    n_tok = 0

    def flush() -> None:
        nonlocal n_tok
        arr = np.asarray(batch_ids, dtype=np.int64)
        pl = payloads(arr) if payloads is not None else [{"passage_id": int(i)} for i in arr]
        if len(pl) != arr.size:
            raise ValueError(f"payloads returned {len(pl)} payloads for {arr.size} ids")
        points = [models.PointStruct(id=int(i), vector={vector_name: v.astype(np_dtype).astype(np.float32).tolist()},
                                     payload=p) for i, v, p in zip(arr, batch_vecs, pl)]
        client.upsert(collection_name=collection, points=points, wait=True)
        stats["points"] += arr.size
        stats["tokens"] += n_tok
        stats["vector_bytes"] += n_tok * dim * np.dtype(np_dtype).itemsize
        stats["batches"] += 1
        if bar is not None:
            bar.update(arr.size)
        batch_ids.clear()
        batch_vecs.clear()
        n_tok = 0

    try:
        for doc_id in ids:
            v = np.asarray(index.reconstruct(int(doc_id)), dtype=np.float32)
            if batch_ids and n_tok + v.shape[0] > batch_tokens:
                flush()
            batch_ids.append(int(doc_id))
            batch_vecs.append(v)
            n_tok += v.shape[0]
        if batch_ids:
            flush()
        client.update_collection(collection, metadata={"plaidx": {**meta["plaidx"], "complete": True}})
    except BaseException:
        try:  # a failed export leaves no collection behind (one a kill left stays marked incomplete)
            client.delete_collection(collection)
        except Exception:  # noqa: BLE001 - the export's own error is the one to report
            pass
        raise
    finally:
        if bar is not None:
            bar.close()
    return stats


def read_collection(client: Any, collection: str, *, vector_name: str | None = None, page: int = 256,
                    progress: bool = False) -> tuple[np.ndarray, list[np.ndarray], list[dict[str, Any]], dict]:
    """Every point of a multivector collection, sorted by id.

    Returns
    -------
    ids : int64 (n,) point ids (unsigned integer ids; UUID ids are refused with a clear error)
    vectors : list of float32 (n_tokens_i, d) arrays
    payloads : list of dicts
    metadata : the collection's metadata ({} when none)
    """
    if not client.collection_exists(collection):
        raise KeyError(f"Qdrant collection {collection!r} does not exist")
    info = client.get_collection(collection)
    params = info.config.params.vectors
    meta = dict(getattr(info.config, "metadata", None) or {})
    named = params if isinstance(params, dict) else {"": params}
    if vector_name is None:
        vector_name = (meta.get("plaidx") or {}).get("vector_name")
        if vector_name is None:
            multi = [n for n, p in named.items() if getattr(p, "multivector_config", None) is not None]
            if not multi:
                raise ValueError(f"collection {collection!r} has no multivector (MAX_SIM) vectors: plaidx imports "
                                 "collections of token vectors (one multivector per point) only")
            if len(multi) > 1:
                raise ValueError(f"collection {collection!r} has multivectors {multi}; pass vector_name to choose one")
            vector_name = multi[0]
    if vector_name not in named or getattr(named[vector_name], "multivector_config", None) is None:
        raise ValueError(f"collection {collection!r} has no multivector named {vector_name!r} (it has "
                         f"{sorted(named)}); pass the name of a multivector with vector_name")
    if (meta.get("plaidx") or {}).get("complete") is False:
        raise ValueError(f"collection {collection!r} is a plaidx export that did not finish (it holds only part of "
                         "the index): export the index again")
    dim = int(named[vector_name].size)
    rows: list[tuple[int, np.ndarray, dict[str, Any]]] = []
    offset = None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="reading", unit="point")
    while True:
        points, offset = client.scroll(collection_name=collection, limit=page, offset=offset,
                                       with_payload=True, with_vectors=[vector_name] if vector_name else True)
        for p in points:
            if not isinstance(p.id, int) or isinstance(p.id, bool):
                raise ValueError(f"point id {p.id!r} is not an integer: plaidx document ids are integers (a "
                                 "collection with UUID ids cannot be imported as is)")
            if p.id >= 1 << 63:
                raise ValueError(f"point id {p.id} is above the largest plaidx document id (2**63 - 1): renumber the "
                                 "points below it to import the collection")
            vec = p.vector.get(vector_name) if isinstance(p.vector, dict) else p.vector
            arr = np.asarray(vec, dtype=np.float32)
            if arr.ndim != 2 or arr.shape[1] != dim or arr.shape[0] == 0:
                raise ValueError(f"point {p.id}: expected a non-empty (n, {dim}) multivector, got shape {arr.shape}")
            rows.append((int(p.id), arr, dict(p.payload or {})))
        if bar is not None:
            bar.update(len(points))
        if offset is None:
            break
    if bar is not None:
        bar.close()
    if not rows:
        raise ValueError(f"collection {collection!r} holds no points")
    rows.sort(key=lambda r: r[0])
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    return ids, [r[1] for r in rows], [r[2] for r in rows], meta


def build_from_points(dst: str | os.PathLike, ids: np.ndarray, vectors: list[np.ndarray], meta: dict[str, Any], *,
                      collection: str, nbits: int | None = None, overwrite: bool = False, progress: bool = False,
                      seed: int = 0) -> Index:
    """Build a plaidx index at ``dst`` from points read by :func:`read_collection`, keeping their ids.

    ``nbits`` defaults to the exported index's (from the collection metadata), else 2.
    """
    exported = meta.get("plaidx") or {}
    nbits = int(nbits or exported.get("nbits") or 2)
    index_meta = dict(exported.get("index_metadata") or {})
    previous = index_meta.get("source")
    index_meta["source"] = {"format": "qdrant", "collection": collection, "vector_name": exported.get("vector_name"),
                            **({"exported_from": previous} if previous else {})}
    return build_with_ids(Path(dst), vectors, ids, nbits=nbits, metadata=index_meta, overwrite=overwrite,
                          progress=progress, seed=seed)


def import_collection(client: Any, collection: str, dst: str | os.PathLike, *, vector_name: str | None = None,
                      nbits: int | None = None, overwrite: bool = False, progress: bool = False,
                      seed: int = 0) -> tuple[Index, np.ndarray, list[dict[str, Any]], dict[str, Any]]:
    """Build a plaidx index at ``dst`` from a collection's multivectors (compressed anew), keeping point ids.

    Returns the index, the ids, the payloads in id order and the collection metadata (for the caller to
    restore a document store from).
    """
    ids, vectors, payloads, meta = read_collection(client, collection, vector_name=vector_name, progress=progress)
    index = build_from_points(dst, ids, vectors, meta, collection=collection, nbits=nbits, overwrite=overwrite,
                              progress=progress, seed=seed)
    return index, ids, payloads, meta


__all__ = ["DEFAULT_VECTOR", "build_from_points", "connect", "export_index", "import_collection", "read_collection"]
