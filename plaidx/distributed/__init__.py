"""Sharded indexes: one codec, many ordinary plaidx indexes, built and searched in-process or on Ray.

    sharded = plaidx.distributed.build(path, documents, n_shards, nbits=2, seed=0, executor="local" | "ray")
    sharded = plaidx.distributed.ShardedIndex.open(path, executor="local" | "ray")
    scores, ids = sharded.search(Q, k=10)   # as Index.search; ids are global (positions in the input)
    sharded.add(docs); sharded.delete(ids); sharded.compact(); sharded.verify(); len(sharded)
    plaidx.distributed.reshard(index_path, path, n_shards)   # an existing index, split byte for byte

Layers inside: ``manifest`` (the on-disk format and the id runs), ``build`` (the resumable build),
``sharded`` (the handle: scatter, merge, atomic writes), ``executors`` (in-process) and ``ray_backend``
(Ray tasks and actors; imported only when ``executor="ray"``). Ray is the optional extra ``plaidx[ray]``.
It imports the engine (and the encoder, for texts in a Ray dataset), never the RAG layer.
"""

from __future__ import annotations

from .build import build
from .errors import ShardBuildError, ShardFormatError, ShardUnavailableError
from .executors import default_executor
from .manifest import SHARDED_MANIFEST, is_sharded
from .reshard import reshard, reshard_in_place
from .sharded import ShardedIndex, merge_topk

__all__ = ["SHARDED_MANIFEST", "ShardBuildError", "ShardFormatError", "ShardUnavailableError", "ShardedIndex",
           "build", "default_executor", "is_sharded", "merge_topk", "reshard", "reshard_in_place"]
