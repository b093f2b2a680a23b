"""Retries of requests whose failure is transient, for the adapters' ``max_retries``.

Transient failures are the ones a second try can cure: a vLLM server's 408, 429 and 5xx answers or a server
that could not be reached (`ServerError`), and an in-process engine that died or dropped the request
(`EngineDeadError`), which is restarted once before the request is sent again. Every other failure (a bad
input, a deadline passed, a closed engine) is final. A stream is retried only before its first piece.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from qwenvl.engine.base import error_result
from qwenvl.errors import EngineDeadError, ServerError
from qwenvl.messages import ChatChunk, ChatRequest, ChatResult

__all__ = [
    "TRANSIENT_STATUS",
    "agenerate_retrying",
    "astream_retrying",
    "generate_retrying",
    "is_transient",
    "stream_retrying",
]

_log = logging.getLogger(__name__)

#: HTTP statuses worth another try (the server engine's own retries use the same set)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_RESTART_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def is_transient(error: BaseException | None) -> bool:
    """Whether a request that failed with ``error`` may succeed if sent again."""
    if isinstance(error, EngineDeadError):
        return True
    if isinstance(error, ServerError):
        return error.status is None or error.status in TRANSIENT_STATUS
    return False


def _revive(engine: Any, error: BaseException | None) -> None:
    """Restart ``engine`` when it is an in-process engine that died (once, however many callers saw it die)."""
    if not isinstance(error, EngineDeadError) or not hasattr(engine, "restart"):
        return
    with _LOCKS_LOCK:
        lock = _RESTART_LOCKS.setdefault(engine, threading.Lock())
    with lock:
        if getattr(engine, "healthy", True) is False:
            _log.warning("the engine died (%s); restarting it to retry", error)
            engine.restart()


def generate_retrying(engine: Any, requests: Sequence[ChatRequest], max_retries: int) -> list[ChatResult]:
    """``engine.generate(requests)``, with each request whose failure is transient sent again, up to
    ``max_retries`` more times; the other results are kept as they came."""
    results = _results(engine.generate, list(requests))
    for _ in range(max_retries):
        redo = [i for i, r in enumerate(results) if is_transient(r.error)]
        if not redo:
            break
        _revive(engine, results[redo[0]].error)
        for i, result in zip(redo, _results(engine.generate, [requests[i] for i in redo]), strict=True):
            results[i] = result
    return results


def _results(generate: Any, requests: list[ChatRequest]) -> list[ChatResult]:
    """``generate(requests)``, with a transient error it raises (a dead engine refuses at once) as every
    request's result."""
    try:
        return list(generate(requests))
    except (EngineDeadError, ServerError) as exc:
        if not is_transient(exc):
            raise
        return [error_result(r, exc) for r in requests]


async def _aresults(agenerate: Any, requests: list[ChatRequest]) -> list[ChatResult]:
    """Async `_results`."""
    try:
        return list(await agenerate(requests))
    except (EngineDeadError, ServerError) as exc:
        if not is_transient(exc):
            raise
        return [error_result(r, exc) for r in requests]


async def agenerate_retrying(engine: Any, requests: Sequence[ChatRequest], max_retries: int) -> list[ChatResult]:
    """Async `generate_retrying` (a restart runs in a worker thread)."""
    results = await _aresults(engine.agenerate, list(requests))
    for _ in range(max_retries):
        redo = [i for i, r in enumerate(results) if is_transient(r.error)]
        if not redo:
            break
        await asyncio.to_thread(_revive, engine, results[redo[0]].error)
        for i, result in zip(redo, await _aresults(engine.agenerate, [requests[i] for i in redo]), strict=True):
            results[i] = result
    return results


def stream_retrying(engine: Any, request: ChatRequest, max_retries: int) -> Iterator[ChatChunk]:
    """``engine.stream(request)``, sent again while it fails transiently before its first piece."""
    for attempt in range(max_retries + 1):
        started = False
        try:
            for chunk in engine.stream(request):
                _raise_to_retry(chunk, started, attempt < max_retries)
                started = True
                yield chunk
            return
        except (EngineDeadError, ServerError) as exc:
            _keep_or_raise(exc, started, attempt < max_retries)
            _revive(engine, exc)


async def astream_retrying(engine: Any, request: ChatRequest, max_retries: int) -> AsyncIterator[ChatChunk]:
    """Async `stream_retrying`."""
    for attempt in range(max_retries + 1):
        started = False
        try:
            async with contextlib.aclosing(engine.astream(request)) as chunks:
                async for chunk in chunks:
                    _raise_to_retry(chunk, started, attempt < max_retries)
                    started = True
                    yield chunk
            return
        except (EngineDeadError, ServerError) as exc:
            _keep_or_raise(exc, started, attempt < max_retries)
            await asyncio.to_thread(_revive, engine, exc)


def _raise_to_retry(chunk: ChatChunk, started: bool, retries_left: bool) -> None:
    """Raise the error of a stream's first piece when it is transient and a retry is left (the caller retries)."""
    if chunk.error is not None and not started and retries_left and is_transient(chunk.error):
        raise chunk.error


def _keep_or_raise(error: BaseException, started: bool, retries_left: bool) -> None:
    """Raise ``error`` again (from an except block) unless the stream may be sent again."""
    if started or not retries_left or not is_transient(error):
        raise error
