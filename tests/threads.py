"""Running test code in threads: every thread's exception reaches the test."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable


def run_in_threads(fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[Any]:
    """``fn(*args)`` in one thread per ``args`` of ``calls``, all started together; their results in order, or
    the first exception one of them raised."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int, args: tuple[Any, ...]) -> None:
        try:
            results[i] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, args)) for i, args in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@contextmanager
def repeating_in_threads(fn: Callable[[int], Any], n: int) -> Iterator[None]:
    """``fn(i)`` called over and over in ``n`` threads (i: the call's count) while the block runs; the first
    exception one of them raised is raised when the block ends."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            i = 0
            while not stop.is_set():
                fn(i)
                i += 1
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=loop) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
