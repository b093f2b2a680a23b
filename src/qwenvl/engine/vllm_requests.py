"""The requests of `VLLMEngine` in flight: one concern, carrying each request between its caller and the driver.

A batch's requests each get a `Collector` (its final output, or its failure, whichever comes first); a
stream's outputs become chunks through a `StreamState`; a caller that may be cancelled while its requests are
being added hands them over through a `Handoff`, so that nothing runs unwatched. Deadlines are monotonic times.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from qwenvl.engine.base import error_result, finalize
from qwenvl.engine.prepare import PreparedRequest
from qwenvl.errors import EngineError, QwenVLError, RequestError
from qwenvl.messages import ChatChunk, ChatRequest, ChatResult

__all__ = [
    "AsyncEvent",
    "Collector",
    "Handoff",
    "StreamState",
    "deadline_of",
    "poll_interval",
    "time_left",
    "vllm_error",
]


class Handoff:
    """The hand-off of requests from a worker thread to the driver, for a caller that may be cancelled
    meanwhile: whichever side comes second aborts what was submitted, so nothing runs unwatched."""

    def __init__(self, abort: Callable[[str], None]) -> None:
        self._abort_one = abort
        self._lock = threading.Lock()
        self._ids: list[str] | None = None
        self.cancelled = False

    def submitted(self, request_ids: list[str]) -> None:
        with self._lock:
            self._ids = request_ids
            cancelled = self.cancelled
        if cancelled:
            self._abort(request_ids)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            ids = self._ids or []
        self._abort(ids)

    def _abort(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            self._abort_one(request_id)


class AsyncEvent:
    """An event set from another thread that an event loop can await."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def set(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)  # raises when the loop is closed: the driver copes

    async def wait(self) -> None:
        await self._event.wait()


class Collector:
    """Receives the final output of one batched request."""

    def __init__(self, engine: Any, prep: PreparedRequest, request_id: str, done: Any) -> None:
        self.engine = engine
        self.prep = prep
        self.request_id = request_id
        self.done = done
        self.output: Any = None
        self.deadline = deadline_of(prep.request)
        self._lock = threading.Lock()

    def put(self, output: Any) -> None:
        if isinstance(output, BaseException) or output.finished:
            self.settle(output)

    def settle(self, output: Any) -> None:
        """Record the request's outcome; the first one wins (an answer racing a deadline or a failure)."""
        with self._lock:
            if self.output is not None:
                return
            self.output = output
        self.done.set()

    def result(self) -> ChatResult:
        request = self.prep.request
        out = self.output
        if isinstance(out, BaseException):
            return error_result(request, out)
        piece = out.outputs[0]
        prompt_ids = list(out.prompt_token_ids or [])
        result = ChatResult(
            text=piece.text,
            finish_reason=piece.finish_reason or "stop",
            usage=self.engine._usage_of(prompt_ids, len(piece.token_ids)),
            request_id=request.request_id,
            prompt_token_ids=prompt_ids,
            token_ids=list(piece.token_ids),
        )
        return finalize(result, self.prep)


class StreamState:
    """Turns the delta outputs of one streamed request into `ChatChunk`s."""

    def __init__(self, engine: Any, prep: PreparedRequest, request_id: str) -> None:
        self.engine = engine
        self.prep = prep
        self.request_id = request_id
        self.prompt_ids: list[int] | None = None
        self.completion = 0
        self.finished = False
        self.text: list[str] = []

    def feed(self, event: Any) -> ChatChunk | None:
        if isinstance(event, BaseException):
            self.finished = True
            raise event if isinstance(event, QwenVLError) else vllm_error(self.prep.request, event)
        if self.prompt_ids is None and event.prompt_token_ids is not None:
            self.prompt_ids = list(event.prompt_token_ids)
        piece = event.outputs[0]
        self.completion += len(piece.token_ids)
        self.text.append(piece.text)
        chunk = ChatChunk(text=piece.text, token_ids=list(piece.token_ids), request_id=self.prep.request.request_id)
        if event.finished:
            self.finished = True
            chunk.usage = self.engine._usage_of(self.prompt_ids or [], self.completion)
            whole = ChatResult(text="".join(self.text), finish_reason=piece.finish_reason or "stop", usage=chunk.usage)
            finalize(whole, self.prep)
            chunk.finish_reason = whole.finish_reason
            chunk.tool_calls = whole.tool_calls
            chunk.parsed = whole.parsed
            chunk.error = whole.error
        return chunk


def deadline_of(request: ChatRequest) -> float | None:
    """The monotonic time a request must end by (None: it has no timeout)."""
    return None if request.timeout is None else time.monotonic() + request.timeout


def time_left(deadline: float | None) -> float | None:
    """Seconds left to ``deadline``, never negative (None: no deadline)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def poll_interval(deadline: float | None) -> float:
    """How long a blocking wait may last before it checks the engine's health and the deadline again."""
    left = time_left(deadline)
    return 1.0 if left is None else min(1.0, left)


def vllm_error(request: ChatRequest, exc: BaseException) -> QwenVLError:
    if isinstance(exc, QwenVLError):
        return exc
    cause = exc.__cause__ or exc
    message = f"vLLM refused or failed request {request.request_id}: {type(cause).__name__}: {cause}"
    if isinstance(cause, ValueError | TypeError):
        return RequestError(message)
    return EngineError(message)
