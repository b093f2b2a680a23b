"""Cancellation is abortion: stopping a call at any point leaves no request running in vLLM.

Each sweep cancels long requests (thousands of tokens) at many points, from before the hand-off to the driver
to mid-generation, and then counts the engine's unfinished requests: a request that kept running with no
consumer would still be counted seconds later.
"""

from __future__ import annotations

import _thread
import asyncio
import threading
import time

import pytest

from tests.reliability.faults import (
    assert_answers,
    await_idle,
    cancel_stream_after,
    good_request,
    long_request,
    wait_idle,
)

pytestmark = pytest.mark.engine

DELAYS = [0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3, 0.5, 0.8]


def test_long_request_really_is_long(vllm_engine) -> None:  # noqa: ANN001
    """The sweeps below are meaningful only if a long request outlives the time we wait for the abort."""
    start = time.monotonic()
    [result] = vllm_engine.generate([long_request(99)])
    assert result.usage.completion_tokens >= 3000
    assert time.monotonic() - start > 1.0


@pytest.mark.parametrize("delay", DELAYS)
async def test_wait_for_timeout_aborts_a_batch(vllm_engine, delay: float) -> None:  # noqa: ANN001
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(vllm_engine.agenerate([long_request(1), long_request(2), good_request(3)]), delay)
    assert await await_idle(vllm_engine, timeout=1.0) == 0


@pytest.mark.parametrize("delay", DELAYS)
async def test_cancelling_a_stream_task_aborts_it(vllm_engine, delay: float) -> None:  # noqa: ANN001
    assert await cancel_stream_after(vllm_engine.astream(long_request(4)), delay)
    assert await await_idle(vllm_engine, timeout=1.0) == 0


@pytest.mark.parametrize("chunks", [1, 2, 5, 20])
async def test_breaking_out_of_a_stream_aborts_it(vllm_engine, chunks: int) -> None:  # noqa: ANN001
    stream = vllm_engine.astream(long_request(5))
    seen = 0
    async for _ in stream:
        seen += 1
        if seen == chunks:
            break
    await stream.aclose()
    assert await await_idle(vllm_engine, timeout=1.0) == 0


@pytest.mark.parametrize("chunks", [0, 1, 3, 10])
def test_closing_a_sync_stream_aborts_it(vllm_engine, chunks: int) -> None:  # noqa: ANN001
    stream = vllm_engine.stream(long_request(6))
    for _ in range(chunks):
        next(stream)
    stream.close()
    assert wait_idle(vllm_engine, timeout=1.0) == 0


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.01, 0.05, 0.2])
def test_a_loop_closed_under_a_pending_call_leaves_the_engine_working(vllm_engine, delay: float) -> None:  # noqa: ANN001
    """asyncio.run(wait_for(...)) closes its loop while the engine may still answer into it."""
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(vllm_engine.agenerate([long_request(7), good_request(8)]), delay))
    assert wait_idle(vllm_engine, timeout=1.0) == 0
    assert_answers(vllm_engine)


def test_answers_arriving_after_the_loop_closed_do_not_kill_the_driver(vllm_engine) -> None:  # noqa: ANN001
    """Short requests that finish just after their loop closed: the driver must survive the closed loop."""
    for delay in (0.05, 0.1, 0.2, 0.3):
        try:
            asyncio.run(asyncio.wait_for(vllm_engine.agenerate([good_request(i, 24) for i in range(4)]), delay))
        except TimeoutError:
            pass
    time.sleep(0.5)
    assert vllm_engine.healthy
    assert_answers(vllm_engine)


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_ctrl_c_during_generate_aborts_the_batch(vllm_engine, delay: float) -> None:  # noqa: ANN001
    timer = threading.Timer(delay, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            vllm_engine.generate([long_request(10), long_request(11), good_request(12)])
    finally:
        timer.cancel()
    assert wait_idle(vllm_engine, timeout=1.0) == 0


async def test_engine_is_healthy_after_the_sweeps(vllm_engine) -> None:  # noqa: ANN001
    [result] = await vllm_engine.agenerate([good_request(9)])
    assert result.ok
    assert vllm_engine.unfinished_requests() == 0


@pytest.mark.transformers
async def test_transformers_engine_stops_a_closed_stream(hf_engine) -> None:  # noqa: ANN001
    """The reference engine too: a closed stream stops its generation, so the next call is not kept waiting
    behind thousands of tokens nobody reads."""
    for close in ("sync", "async"):
        if close == "sync":
            stream = hf_engine.stream(long_request(20))
            next(stream)
            stream.close()
        else:
            astream = hf_engine.astream(long_request(21))
            await astream.__anext__()
            await astream.aclose()
        start = time.monotonic()
        [result] = hf_engine.generate([good_request(13, max_tokens=2)])
        assert result.ok and time.monotonic() - start < 15


async def test_cancelling_while_chunks_flow_always_aborts(vllm_engine) -> None:  # noqa: ANN001
    """A cancellation that lands while a chunk is arriving must not be lost (asyncio.wait_for on Python 3.11
    loses it when the awaited item completes at the same moment; the stream then runs on unread)."""
    import random

    rng = random.Random(3)
    lost = 0
    for _ in range(25):
        seen = asyncio.Event()

        async def consume(seen: asyncio.Event = seen) -> None:
            async for _ in vllm_engine.astream(long_request(40)):
                seen.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(seen.wait(), 30)
        await asyncio.sleep(rng.uniform(0, 0.02))
        task.cancel()
        try:
            await task
            lost += 1
        except asyncio.CancelledError:
            pass
        assert await await_idle(vllm_engine, timeout=1.0) == 0
    assert lost == 0
