"""Retries of transient failures (`qwenvl.engine.retry`), on a scripted engine: which failures are sent again,
how often, that a dead engine is restarted once, and that a stream is retried only before its first piece.
The real engine's death and restart is in tests/reliability/test_engine_death.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from qwenvl import ChatChunk, ChatRequest, ChatResult, Message
from qwenvl.engine.retry import agenerate_retrying, astream_retrying, generate_retrying, is_transient, stream_retrying
from qwenvl.errors import EngineDeadError, RequestError, RequestTimeoutError, ServerError


class Flaky:
    """Fails the first ``failures`` attempts of each request with ``error`` (as results, or raised when the
    engine is dead), then answers; ``restart`` revives it."""

    def __init__(self, error: Exception, failures: int = 1, *, raise_when_dead: bool = False) -> None:
        self.error, self.failures, self.raise_when_dead = error, failures, raise_when_dead
        self.attempts: dict[str, int] = {}
        self.restarts = 0
        self.healthy = not isinstance(error, EngineDeadError)

    def restart(self) -> None:
        self.restarts += 1
        self.healthy = True

    def _answer(self, request: ChatRequest) -> ChatResult:
        n = self.attempts[request.request_id] = self.attempts.get(request.request_id, 0) + 1
        if n <= self.failures:
            return ChatResult(error=self.error, request_id=request.request_id, finish_reason="error")
        return ChatResult(text="ok", request_id=request.request_id, finish_reason="stop")

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        if self.raise_when_dead and not self.healthy:
            for r in requests:
                self.attempts[r.request_id] = self.attempts.get(r.request_id, 0) + 1
            raise self.error
        return [self._answer(r) for r in requests]

    async def agenerate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        return self.generate(requests)

    def stream(self, request: ChatRequest) -> Any:
        result = self._answer(request)
        if result.error is not None:
            yield ChatChunk(error=result.error, finish_reason="error")
            return
        yield ChatChunk(text="o")
        yield ChatChunk(text="k", finish_reason="stop")

    async def astream(self, request: ChatRequest) -> Any:
        for chunk in self.stream(request):
            yield chunk


def _requests(n: int) -> list[ChatRequest]:
    return [ChatRequest([Message("user", f"q{i}")]) for i in range(n)]


def test_which_failures_are_transient() -> None:
    assert is_transient(EngineDeadError("died"))
    assert is_transient(ServerError("down", status=None)) and is_transient(ServerError("busy", status=503))
    assert not is_transient(ServerError("bad request", status=400))
    assert not is_transient(RequestError("bad image")) and not is_transient(RequestTimeoutError("late"))
    assert not is_transient(None)


def test_transient_failures_are_sent_again_up_to_max_retries() -> None:
    engine = Flaky(ServerError("busy", status=503), failures=2)
    requests = _requests(3)
    assert [r.text for r in generate_retrying(engine, requests, 2)] == ["ok"] * 3
    assert set(engine.attempts.values()) == {3}
    engine = Flaky(ServerError("busy", status=503), failures=2)
    results = generate_retrying(engine, requests, 1)  # one retry is not enough: the error is kept
    assert all(isinstance(r.error, ServerError) for r in results)
    engine = Flaky(ServerError("busy", status=503), failures=1)
    assert all(r.error is not None for r in generate_retrying(engine, requests, 0))  # none: one attempt
    assert set(engine.attempts.values()) == {1}


def test_final_failures_are_not_sent_again() -> None:
    engine = Flaky(RequestError("bad image"), failures=1)
    [result] = generate_retrying(engine, _requests(1), 3)
    assert isinstance(result.error, RequestError) and set(engine.attempts.values()) == {1}


def test_a_dead_engine_is_restarted_once_for_the_whole_batch() -> None:
    engine = Flaky(EngineDeadError("the engine-core process died"), failures=1, raise_when_dead=True)
    results = generate_retrying(engine, _requests(4), 1)
    assert [r.text for r in results] == ["ok"] * 4 and engine.restarts == 1
    engine = Flaky(EngineDeadError("died"), failures=1, raise_when_dead=True)
    assert [r.text for r in asyncio.run(agenerate_retrying(engine, _requests(2), 1))] == ["ok"] * 2
    assert engine.restarts == 1


def test_a_stream_is_retried_before_its_first_piece_only() -> None:
    engine = Flaky(ServerError("busy", status=502), failures=1)
    chunks = list(stream_retrying(engine, _requests(1)[0], 1))
    assert "".join(c.text for c in chunks) == "ok" and all(c.error is None for c in chunks)

    async def collect() -> list[ChatChunk]:
        return [c async for c in astream_retrying(Flaky(ServerError("busy", status=502)), _requests(1)[0], 1)]

    assert "".join(c.text for c in asyncio.run(collect())) == "ok"
    # without retries the failure reaches the caller as the stream's error
    [failed] = list(stream_retrying(Flaky(ServerError("busy", status=502)), _requests(1)[0], 0))
    assert isinstance(failed.error, ServerError)


def test_a_started_stream_is_not_sent_again() -> None:
    class BreaksMidway(Flaky):
        def stream(self, request: ChatRequest) -> Any:
            self.attempts[request.request_id] = self.attempts.get(request.request_id, 0) + 1
            yield ChatChunk(text="o")
            raise EngineDeadError("died mid-answer")

    engine = BreaksMidway(EngineDeadError("x"))
    with pytest.raises(EngineDeadError):
        list(stream_retrying(engine, _requests(1)[0], 3))
    assert set(engine.attempts.values()) == {1}
