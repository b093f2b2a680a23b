"""QwenVL (LlamaIndex) under bad input, through the real engine: malformed tool-call history is a typed error,
a cancelled call is aborted, and the engine answers afterwards."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.llms.types import ChatMessage, TextBlock, ToolCallBlock

from llama_index.llms.qwenvl import QwenVL
from qwenvl.errors import RequestError
from qwenvl_testkit.helpers import assert_answers, await_idle

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("kwargs", ["{not json", "[1, 2]", '"a string"'])
def test_llama_index_bad_tool_kwargs_are_request_errors(vllm_engine, kwargs) -> None:  # noqa: ANN001
    llm = QwenVL(engine=vllm_engine, max_tokens=4)
    messages = [
        ChatMessage(role="user", blocks=[TextBlock(text="look it up")]),
        ChatMessage(
            role="assistant", blocks=[ToolCallBlock(tool_call_id="c1", tool_name="lookup", tool_kwargs=kwargs)]
        ),
    ]
    with pytest.raises(RequestError, match="lookup"):
        llm.chat(messages)
    with pytest.raises(RequestError, match="lookup"):
        asyncio.run(llm.achat(messages))


async def test_llama_index_cancelled_achat_aborts(vllm_engine) -> None:  # noqa: ANN001
    llm = QwenVL(engine=vllm_engine, max_tokens=3500)
    messages = [ChatMessage(role="user", content="go")]
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(llm.achat(messages), 0.2)
    assert await await_idle(vllm_engine, timeout=1.0) == 0


def test_engine_answers_after_adapter_faults(vllm_engine) -> None:  # noqa: ANN001
    assert_answers(vllm_engine)
