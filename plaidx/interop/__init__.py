"""Ways in and out: other engines' indexes (colbert-ai/PLAID, PyLate, fast-plaid) opened without running
their pickles, and exports to vector databases (Qdrant). Sits above the engine, below the RAG layer."""
