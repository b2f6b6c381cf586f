"""Model calls of the server: one worker thread per model batches concurrent requests into shared calls."""

from __future__ import annotations

import asyncio
import queue
import threading
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from .errors import ApiError


@dataclass
class _Job:
    texts: list[str]
    input_type: str
    dimensions: Optional[int]
    max_tokens: int
    fit_length: bool = False
    param: str = "input"  # the request field the texts came from, named by a token-limit error
    length: int = 0
    future: Future = field(default_factory=Future)


class Encoder:
    """One model behind a worker thread that batches concurrent requests into shared model calls.

    Every call into the model (and its tokenizer, which is not safe to share between threads) runs on
    the worker thread. The worker takes whatever requests are waiting when it becomes free, so a lone
    request is encoded at once and requests arriving while the model is busy share its next call.
    """

    def __init__(self, model: Any, max_batch_texts: int = 64):
        self.model = model
        self.max_batch_texts = max_batch_texts
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._by_length: dict[int, Any] = {}
        self.calls = 0  # model calls made, for tests and benchmarks

    def submit(self, texts: list[str], input_type: str, dimensions: Optional[int], max_tokens: int,
               fit_length: bool = False, param: str = "input") -> Future:
        """Queue texts; the future gives ``(embeddings, tokens)``: one float32 array per text and the
        number of tokens the model read for them. Token-limit overruns raise :class:`ApiError`.

        Documents are read up to the model's document_length, or with ``fit_length`` in full up to the
        model's positions (as :func:`plaidx.rerank` reads them). Queries are read at the model's query_length,
        or with ``fit_length`` at :func:`plaidx.rag.queries.query_length_for` of the longest."""
        if self._closed:
            raise ApiError(503, "shutting_down", "the server is shutting down")
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="plaidx-encoder", daemon=True)
                    self._thread.start()
        job = _Job(texts, input_type, dimensions, max_tokens, fit_length, param)
        self._queue.put(job)
        return job.future

    async def encode(self, texts: list[str], input_type: str, dimensions: Optional[int], max_tokens: int,
                     fit_length: bool = False, param: str = "input") -> tuple[list[np.ndarray], int]:
        return await asyncio.wrap_future(self.submit(texts, input_type, dimensions, max_tokens, fit_length, param))

    def close(self) -> None:
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)

    # -- worker thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, n, stop = [job], len(job.texts), False
            while n < self.max_batch_texts:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                jobs.append(more)
                n += len(more.texts)
            self._serve(jobs)
            if stop:
                return

    def _serve(self, jobs: list[_Job]) -> None:
        ready: dict[tuple[str, Optional[int], int], list[tuple[_Job, int]]] = {}
        for job in jobs:
            if not job.future.set_running_or_notify_cancel():
                continue
            try:
                tokens = self._count(job)
            except Exception as exc:  # noqa: BLE001 - handed to the request that caused it
                job.future.set_exception(_as_api_error(exc))
                continue
            ready.setdefault((job.input_type, job.dimensions, job.length), []).append((job, tokens))
        for (input_type, dimensions, length), group in ready.items():
            try:
                self._encode_group(group, input_type, dimensions, length)
            except Exception as exc:  # noqa: BLE001 - one bad request must not fail the others batched with it
                if len(group) == 1:
                    group[0][0].future.set_exception(_as_api_error(exc))
                    continue
                for item in group:
                    try:
                        self._encode_group([item], input_type, dimensions, length)
                    except Exception as exc:  # noqa: BLE001
                        item[0].future.set_exception(_as_api_error(exc))

    def _count(self, job: _Job) -> int:
        with _model_lock(self.model):
            return self._count_locked(job)

    def _count_locked(self, job: _Job) -> int:
        m = self.model
        counts = m.count_tokens(job.texts, add_special_tokens=True)
        length = m.query_length if job.input_type == "query" else m.document_length
        if job.fit_length and job.input_type == "query":  # long queries read whole, as the RAG API reads them
            from ..encoder import ColBERT
            from ..rag.queries import query_length_for

            if isinstance(m, ColBERT):
                length = max(query_length_for(m, t) for t in job.texts)
        if job.fit_length and job.input_type == "document":
            limit = getattr(m, "max_length", None) or max(counts)
            length = max(length, min(-(-max(counts) // 64) * 64, limit))
        job.length = length
        total = int(sum(min(c, length) for c in counts))
        if total > job.max_tokens:
            raise ApiError(413, "too_many_tokens",
                           f"the inputs hold {total} tokens (after truncation at {length}); this server accepts "
                           f"at most {job.max_tokens} per request: send fewer or shorter texts", job.param)
        return total

    def _model_for(self, input_type: str, length: int) -> Any:
        m = self.model
        if input_type == "query" or length == m.document_length:
            return m
        if length not in self._by_length:  # the same weights reading longer documents
            self._by_length[length] = m.with_document_length(length)
        return self._by_length[length]

    def _encode_group(self, group: list[tuple[_Job, int]], input_type: str, dimensions: Optional[int],
                      length: int) -> None:
        texts = [t for job, _ in group for t in job.texts]
        self.calls += 1
        with _model_lock(self.model):
            model = self._model_for(input_type, length)
            more = {"query_length": length} if input_type == "query" and length != model.query_length else {}
            out = model.encode(texts, input_type=input_type, dimensions=dimensions, show_progress_bar=False, **more)
        rows = list(out)
        start = 0
        for job, tokens in group:
            job.future.set_result((rows[start:start + len(job.texts)], tokens))
            start += len(job.texts)


_MODEL_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def _model_lock(model: Any) -> threading.Lock:
    """One lock per model object, so apps (or encoders) sharing a model never call it at the same time."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.Lock()
        return lock


def _as_api_error(exc: BaseException) -> BaseException:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, (ValueError, TypeError)):
        return ApiError(400, "invalid_request", str(exc))
    return exc
