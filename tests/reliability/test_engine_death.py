"""When vLLM dies (its engine-core process killed, a step stuck), nothing hangs: every pending request fails at
once with `EngineError`, later calls fail fast, and `restart()` brings the engine back.

These tests kill their own engine (not the session's shared one)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qwenvl.errors import EngineError
from tests.helpers import EAGER, ENGINE_ARGS
from tests.reliability.faults import assert_answers, good_request, long_request

pytestmark = [pytest.mark.engine, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def doomed_engine(tiny_model: Path) -> Iterator[object]:
    from qwenvl import VLLMEngine

    engine = VLLMEngine(tiny_model, gpu_memory_utilization=0.15, stall_timeout=3.0, engine_kwargs=EAGER, **ENGINE_ARGS)
    yield engine
    engine.close()


def _core_processes(engine: object) -> list:
    resources = engine._llm.llm_engine.engine_core.resources  # type: ignore[attr-defined]
    return list(resources.engine_manager.processes)


def _run_in_thread(fn) -> dict:  # noqa: ANN001
    box: dict = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    box["thread"] = thread
    return box


def test_killed_engine_core_fails_pending_requests_and_later_calls_fast(doomed_engine) -> None:  # noqa: ANN001
    engine = doomed_engine
    assert_answers(engine)
    box = _run_in_thread(lambda: engine.generate([long_request(i) for i in range(3)]))
    deadline = time.monotonic() + 20
    while engine.unfinished_requests() < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # mid-generation
    killed_at = time.monotonic()
    for proc in _core_processes(engine):
        os.kill(proc.pid, signal.SIGKILL)
    box["thread"].join(timeout=30)
    assert not box["thread"].is_alive(), "the batch hung after the engine died"
    waited = time.monotonic() - killed_at
    results = box["value"]
    assert len(results) == 3 and all(isinstance(r.error, EngineError) for r in results), results
    assert waited < 15, waited
    assert not engine.healthy
    start = time.monotonic()
    with pytest.raises(EngineError, match="restart"):
        engine.generate([good_request()])
    with pytest.raises(EngineError):
        list(engine.stream(good_request()))

    async def agen() -> None:
        await engine.agenerate([good_request()])

    with pytest.raises(EngineError):
        asyncio.run(agen())
    assert time.monotonic() - start < 2.0


def test_retries_restart_the_dead_engine_and_answer(doomed_engine) -> None:  # noqa: ANN001
    """max_retries in the adapters (`generate_retrying`): the dead engine refuses at once with the transient
    `EngineDeadError`, is restarted once, and the requests are answered."""
    from qwenvl.engine.retry import generate_retrying
    from qwenvl.errors import EngineDeadError

    assert not doomed_engine.healthy
    with pytest.raises(EngineDeadError):
        doomed_engine.generate([good_request()])
    results = generate_retrying(doomed_engine, [good_request(1), good_request(2)], 1)
    assert all(r.ok for r in results), results
    assert doomed_engine.healthy
    assert_answers(doomed_engine)


def test_a_stuck_step_is_noticed_by_the_watchdog(doomed_engine) -> None:  # noqa: ANN001
    """Requests that never reach the engine core (as when vLLM's input thread dies): the step waits for an
    output that never comes; after stall_timeout every pending request fails and the engine says so."""
    core = doomed_engine._llm.llm_engine.engine_core
    core.add_request = lambda request: None  # the engine core never hears of new requests
    box = _run_in_thread(lambda: doomed_engine.generate([good_request(1), good_request(2)]))
    box["thread"].join(timeout=30)
    assert not box["thread"].is_alive(), "the batch hung on a stuck engine"
    assert all(isinstance(r.error, EngineError) and "stall" in str(r.error) for r in box["value"]), box["value"]
    with pytest.raises(EngineError):
        doomed_engine.generate([good_request()])
    doomed_engine.restart()
    assert_answers(doomed_engine)
