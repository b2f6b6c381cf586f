"""Ways in and out: other engines' indexes (colbert-ai/PLAID, PyLate, fast-plaid) opened without running
their pickles, and exports to vector databases (Qdrant). Sits above the engine, below the RAG layer.

* :func:`convert_colbert` (``colbert.py``): a colbert-ai / Stanford PLAID index folder -> a plaidx index, lossless.
* :func:`convert_fastplaid` (``fastplaid.py``): a fast-plaid, next-plaid or PyLate index folder -> a plaidx index.
* ``qdrant.py``: export to / import from a Qdrant multivector (MAX_SIM) collection (extra ``qdrant``).
* ``safe_pickle.py``: the torch-free, allow-list readers of ``.pt``, ``.pkl`` and ``.npy`` files they use.
"""

from .colbert import convert_colbert, is_colbert_index, read_colbert
from .fastplaid import convert_fastplaid, is_fastplaid_index, read_fastplaid
from .safe_pickle import load_npy, load_plain_pickle, load_pt

__all__ = ["convert_colbert", "convert_fastplaid", "is_colbert_index", "is_fastplaid_index", "load_npy",
           "load_plain_pickle", "load_pt", "read_colbert", "read_fastplaid"]
