"""`ChatRequest.timeout`: a deadline per request in every engine; past it the request is aborted (nothing left
running) and fails alone with `RequestTimeoutError`."""

from __future__ import annotations

import dataclasses
import time

import pytest

from qwenvl import ChatRequest, Message
from qwenvl.errors import RequestTimeoutError
from tests.reliability.fake_server import Exchange, FakeServer, completion
from tests.reliability.faults import await_idle, good_request, long_request, wait_idle


def _long(timeout: float) -> object:
    return dataclasses.replace(long_request(30), timeout=timeout)


@pytest.mark.engine
def test_vllm_engine_deadline_in_a_batch_and_a_stream(vllm_engine) -> None:  # noqa: ANN001
    start = time.monotonic()
    late, fine = vllm_engine.generate([_long(0.5), dataclasses.replace(good_request(1), timeout=30.0)])
    assert isinstance(late.error, RequestTimeoutError) and fine.ok
    assert time.monotonic() - start < 5
    assert wait_idle(vllm_engine, timeout=1.0) == 0
    with pytest.raises(RequestTimeoutError):
        list(vllm_engine.stream(_long(0.5)))
    assert wait_idle(vllm_engine, timeout=1.0) == 0


@pytest.mark.engine
async def test_vllm_engine_deadline_async(vllm_engine) -> None:  # noqa: ANN001
    [late] = await vllm_engine.agenerate([_long(0.5)])
    assert isinstance(late.error, RequestTimeoutError)
    with pytest.raises(RequestTimeoutError):
        async for _ in vllm_engine.astream(_long(0.5)):
            pass
    assert await await_idle(vllm_engine, timeout=1.0) == 0


def test_server_engine_deadline_covers_retries(tiny_model) -> None:  # noqa: ANN001
    from qwenvl import VLLMServerEngine

    def handler(ex: Exchange) -> None:
        if "slow" in ex.text:
            time.sleep(5)
        ex.send(200, completion("done"))

    with FakeServer(handler) as server:
        engine = VLLMServerEngine(server.url, "tiny", tokenizer=str(tiny_model), timeout=30.0)
        try:
            slow = ChatRequest([Message("user", "slow")], timeout=0.5)
            start = time.monotonic()
            late, fine = engine.generate([slow, good_request(3)])
            assert isinstance(late.error, RequestTimeoutError) and fine.ok
            assert time.monotonic() - start < 4
            with pytest.raises(RequestTimeoutError):
                list(engine.stream(slow))
        finally:
            engine.close()


@pytest.mark.transformers
def test_transformers_engine_deadline(hf_engine) -> None:  # noqa: ANN001
    start = time.monotonic()
    [late] = hf_engine.generate([_long(1.0)])
    assert isinstance(late.error, RequestTimeoutError)
    assert time.monotonic() - start < 10
