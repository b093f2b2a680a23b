"""ChatQwenVL under bad input, through the real engine: a bad input fails alone (batch with return_exceptions
keeps the others), errors are typed, cancelled streams are aborted, and the engine answers afterwards."""

from __future__ import annotations

import math

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from langchain_qwenvl import ChatQwenVL
from qwenvl.errors import QwenVLError
from qwenvl_testkit.helpers import assert_answers, await_idle, cancel_stream_after

pytestmark = pytest.mark.engine


def _tool_history(args: dict) -> list:
    return [
        HumanMessage("look it up"),
        AIMessage("", tool_calls=[{"name": "lookup", "args": args, "id": "call_1"}]),
        ToolMessage("found", tool_call_id="call_1"),
    ]


BAD_INPUTS = {
    "args not JSON": _tool_history({"when": object()}),
    "args with NaN": _tool_history({"x": math.nan}),
    "audio block": [
        HumanMessage([{"type": "audio", "source_type": "base64", "data": "AAAA", "mime_type": "audio/wav"}])
    ],
    "undecodable image": [HumanMessage([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}])],
    "private image URL": [HumanMessage([{"type": "image_url", "image_url": {"url": "http://169.254.169.254/x.png"}}])],
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_langchain_batch_keeps_the_good_inputs(vllm_engine, name: str) -> None:  # noqa: ANN001
    chat = ChatQwenVL(engine=vllm_engine, max_tokens=4)
    out = chat.batch(["hello", BAD_INPUTS[name], "bye"], return_exceptions=True)
    assert isinstance(out[0], AIMessage) and isinstance(out[2], AIMessage)
    assert isinstance(out[1], QwenVLError | ValueError | TypeError), out[1]
    with pytest.raises((QwenVLError, ValueError, TypeError)):
        chat.invoke(BAD_INPUTS[name])


async def test_langchain_abatch_keeps_the_good_inputs(vllm_engine) -> None:  # noqa: ANN001
    chat = ChatQwenVL(engine=vllm_engine, max_tokens=4)
    out = await chat.abatch(["hello", *BAD_INPUTS.values(), "bye"], return_exceptions=True)
    assert isinstance(out[0], AIMessage) and isinstance(out[-1], AIMessage)
    assert all(isinstance(o, Exception) for o in out[1:-1])


async def test_langchain_cancelled_astream_aborts(vllm_engine) -> None:  # noqa: ANN001
    chat = ChatQwenVL(engine=vllm_engine, max_tokens=3500)

    for delay in (0.0, 0.01, 0.1, 0.3):
        await cancel_stream_after(chat.astream("count forever"), delay)
        assert await await_idle(vllm_engine, timeout=1.0) == 0


def test_engine_answers_after_adapter_faults(vllm_engine) -> None:  # noqa: ANN001
    assert_answers(vllm_engine)
