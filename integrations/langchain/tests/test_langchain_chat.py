"""ChatQwenVL beyond the standard suites: content blocks, one engine call per batch, LCEL chains."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import JsonOutputParser
from langchain_core.prompts import ChatPromptTemplate
from pydantic import BaseModel, Field

from langchain_qwenvl import ChatQwenVL
from langchain_qwenvl.convert import to_qwen_messages
from qwenvl import ChatRequest, Image, Text, Video
from qwenvl.messages import ChatResult
from qwenvl_testkit.helpers import make_image, png_bytes


class CountingEngine:
    """Wraps an engine and counts the batch calls that reach it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[int] = []

    @property
    def model_name(self) -> str:
        return self.inner.model_name

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        self.calls.append(len(requests))
        return self.inner.generate(requests)

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        self.calls.append(len(requests))
        return await self.inner.agenerate(requests)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _b64(seed: int, size: tuple[int, int] = (320, 240)) -> str:
    return base64.b64encode(png_bytes(make_image(*size, seed=seed))).decode()


def test_every_block_kind_converts(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "p.png"
    make_image(50, 40).save(path)
    msg = HumanMessage(
        content=[
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_b64(1)}"}, "max_pixels": 4 * 784},
            {"type": "image", "base64": _b64(2), "mime_type": "image/png", "min_pixels": 8 * 784},
            {"type": "image", "url": "https://example.com/x.png"},
            {"type": "image", "image": str(path)},
            {"type": "image", "source_type": "base64", "data": _b64(3), "mime_type": "image/png"},
            {"type": "video", "video": [str(path), str(path)], "nframes": 2},
        ]
    )
    [converted] = to_qwen_messages([msg])
    kinds = [type(p) for p in converted.parts()]
    assert kinds == [Text, Image, Image, Image, Image, Image, Video]
    parts = converted.parts()
    assert parts[1].max_pixels == 4 * 784 and parts[2].min_pixels == 8 * 784
    assert parts[3].source == "https://example.com/x.png" and parts[4].source == str(path)
    tool = ToolMessage(content=[{"type": "text", "text": "ok"}, {"type": "image", "base64": _b64(4)}], tool_call_id="1")
    [t] = to_qwen_messages([tool])
    assert t.role == "tool" and isinstance(t.parts()[1], Image)


@pytest.mark.parametrize(
    "block",
    [{"type": "audio", "base64": "x"}, {"type": "file", "file_id": "f"}, {"type": "image", "file_id": "abc"}, 42],
)
def test_unknown_blocks_raise(block: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        to_qwen_messages([HumanMessage(content=[{"type": "text", "text": "x"}, block])])


def test_batch_is_one_engine_call_with_image_usage(vllm_engine) -> None:  # noqa: ANN001
    engine = CountingEngine(vllm_engine)
    chat = ChatQwenVL(engine=engine, max_tokens=8)
    inputs = [
        [
            HumanMessage(
                content=[{"type": "image", "base64": _b64(i, (200 + 10 * i, 150)), "mime_type": "image/png"}, "?"]
            )
        ]
        for i in range(16)
    ]
    outputs = chat.batch(inputs)
    assert engine.calls == [16]
    assert all(isinstance(o, AIMessage) for o in outputs)
    tokens = [o.usage_metadata["input_token_details"]["image"] for o in outputs]
    expected = [vllm_engine.count_tokens(chat._request(msgs)).image_tokens for msgs in inputs]
    assert tokens == expected and len(set(tokens)) > 3


async def test_abatch_is_one_engine_call_and_keeps_errors(vllm_engine) -> None:  # noqa: ANN001
    engine = CountingEngine(vllm_engine)
    chat = ChatQwenVL(engine=engine, max_tokens=8)
    good = [HumanMessage(content=[{"type": "image", "base64": _b64(1), "mime_type": "image/png"}, "?"])]
    bad = [HumanMessage(content=[{"type": "image", "base64": base64.b64encode(b"nope").decode()}, "?"])]
    unknown = [HumanMessage(content=[{"type": "audio", "base64": "x"}])]
    outputs = await chat.abatch([good, bad, unknown, good], return_exceptions=True)
    assert engine.calls == [3]  # the unconvertible input never reaches the engine
    assert isinstance(outputs[0], AIMessage) and isinstance(outputs[3], AIMessage)
    assert isinstance(outputs[1], ValueError) and isinstance(outputs[2], ValueError)
    with pytest.raises(ValueError):
        await chat.abatch([good, bad])


def test_lcel_chain_with_json_parser_over_an_image(vllm_engine) -> None:  # noqa: ANN001
    class Reading(BaseModel):
        title: str = Field(max_length=20)
        pages: int = Field(ge=1, le=99)

    chat = ChatQwenVL(engine=vllm_engine, max_tokens=200, temperature=0.8, model_kwargs={"seed": 1})
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "Answer in JSON."),
            ("human", [{"type": "image_url", "image_url": {"url": "{image}"}}, {"type": "text", "text": "{question}"}]),
        ]
    )
    chain = prompt | chat.bind(response_format=Reading) | JsonOutputParser()
    out = chain.invoke({"image": f"data:image/png;base64,{_b64(9)}", "question": "Title and pages?"})
    assert set(out) == {"title", "pages"} and 1 <= out["pages"] <= 99
    structured = chat.with_structured_output(Reading, include_raw=True).invoke(
        [SystemMessage("JSON"), HumanMessage("Title and pages?")]
    )
    assert isinstance(structured["parsed"], Reading) and structured["parsing_error"] is None


def test_streaming_calls_back_per_token(vllm_engine) -> None:  # noqa: ANN001
    from langchain_core.callbacks import BaseCallbackHandler

    class Tokens(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            self.tokens.append(token)

    handler = Tokens()
    chat = ChatQwenVL(engine=vllm_engine, max_tokens=16)
    chunks = list(chat.stream("Hello there", config={"callbacks": [handler]}))
    assert len(chunks) == len(handler.tokens) >= 3
    assert chunks[-1].usage_metadata is not None and chunks[-1].response_metadata["finish_reason"]
    assert "".join(handler.tokens) == "".join(c.text for c in chunks)
