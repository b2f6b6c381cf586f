"""Passages as an engine EncodedCorpus: tokenised once on the host, encoded window by window on the model's device.

``RAGPretrainedModel.index(..., device="cuda")`` builds from a :class:`PassageCorpus` instead of a
stream of encoded arrays: the engine (plaidx.engine.gpu_build) asks for the k-means sample's passages,
then for consecutive windows of passages, which a worker thread encodes while the GPU compresses the
window before. A window's vectors stay on the model's device (one float32 tensor); only the codes and
packed residuals come back to the host. Token counts are known from tokenisation, before any encoding.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..engine.gpu_build import EncodedCorpus

TOKENIZE_CHUNK = 4096  # passages tokenised per call


class PassageCorpus(EncodedCorpus):
    """The passages' token vectors as the encoder ``enc`` (a ColBERT document encoder) makes them.

    Parameters
    ----------
    enc : the document encoder (its ``document_length`` bounds each passage).
    texts : the passages, in index order.
    bsize : passages per forward pass.
    lock : held around each window's encoding (the model is shared with query encoding).
    """

    def __init__(self, enc: Any, texts: list[str], bsize: int, lock: Any = None):
        self.enc, self.bsize = enc, int(bsize)
        self.lock = lock if lock is not None else threading.RLock()
        text = enc._text
        skip = np.fromiter(text.skiplist_ids, dtype=np.int64) if text.skiplist_ids else np.zeros(0, np.int64)
        ids: list[np.ndarray] = []
        for lo in range(0, len(texts), TOKENIZE_CHUNK):
            ids += [np.asarray(s, dtype=np.int32) for s in text.documents(texts[lo:lo + TOKENIZE_CHUNK],
                                                                          enc.document_length)]
        self.offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum([a.size for a in ids], out=self.offsets[1:])
        self.tokens = np.concatenate(ids) if ids else np.zeros(0, np.int32)  # 4 bytes per token on the host
        # the vectors kept per passage: its tokens outside the skiplist (TextTokenizer.pad_documents' keep)
        kept = ~np.isin(self.tokens, skip)
        lengths = np.add.reduceat(kept.astype(np.int64), self.offsets[:-1]) if ids else np.zeros(0, np.int64)
        super().__init__(lengths, enc.dim)

    def encode(self, indices: np.ndarray) -> Any:
        """float32 (tokens of these passages, d), L2-normalised rows in passage order: a torch tensor on
        the model's device (synchronised), or numpy when the model runs on the CPU."""
        import torch
        import torch.nn.functional as F

        enc = self.enc
        seqs = [self.tokens[self.offsets[i]:self.offsets[i + 1]].tolist() for i in indices]
        order = np.argsort(-np.array([len(s) for s in seqs]), kind="stable")  # little padding per batch
        parts: list[Any] = [None] * len(seqs)
        with self.lock, torch.inference_mode():
            for lo in range(0, len(seqs), self.bsize):
                idx = order[lo:lo + self.bsize]
                ids, attention, keep = enc._text.pad_documents([seqs[i] for i in idx])
                emb = enc._embed(ids, attention, None, None)
                keep = keep.to(emb.device)
                flat = F.normalize(emb[keep], p=2, dim=-1)
                for i, part in zip(idx, torch.split(flat, keep.sum(dim=1).tolist())):
                    parts[int(i)] = part
            out = torch.cat(parts).float().contiguous()
            if out.is_cuda:
                torch.cuda.current_stream(out.device).synchronize()  # the engine reads it on its own stream
                return out
        return out.numpy()
