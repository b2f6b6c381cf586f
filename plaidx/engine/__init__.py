"""The engine: compressed multi-vector indexes on disk, built, searched and updated without torch.

Layers inside: ``storage`` (the generation format), ``codec`` and ``clustering`` (what is stored),
``build`` (the build pipeline), ``snapshot`` (one open generation), ``index`` (the public handle),
``params`` (search knobs), ``scoring`` (MaxSim without an index), ``kernels`` (native or reference),
``gpu`` (the CUDA module). It never imports the encoder, the RAG layer, the server or the CLI.
"""

from __future__ import annotations

from .index import Index
from .info import build_info
from .params import SearchParams
from .scoring import maxsim
from .storage import WriterLock, fsync_dir

__all__ = ["Index", "SearchParams", "WriterLock", "build_info", "fsync_dir", "maxsim"]
