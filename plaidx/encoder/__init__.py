"""Text encoders: ColBERT-family checkpoints (Stanford, PyLate, jina-colbert-v2) and plain transformers
encoders, producing the per-token embeddings a plaidx index stores."""

from .loading import DEFAULT_MODEL_NAME, CheckpointError
from .model import ColBERT

__all__ = ["ColBERT", "CheckpointError", "DEFAULT_MODEL_NAME"]
