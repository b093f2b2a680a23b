"""`QwenVLMultiModal`: LlamaIndex's older multi-modal API (``complete(prompt, image_documents)``) over `QwenVL`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.multi_modal_llms import MultiModalLLM, MultiModalLLMMetadata

from llama_index.llms.qwenvl import QwenVL

__all__ = ["QwenVLMultiModal"]


class QwenVLMultiModal(MultiModalLLM):
    """A shim for code that still uses ``MultiModalLLM``; every call goes to a `QwenVL` (built from the same
    arguments, or given as ``llm``)."""

    #: read by LlamaIndex's LLM callback wrappers, which MultiModalLLM subclasses get too
    rate_limiter: Any = Field(default=None, exclude=True)

    _llm: QwenVL = PrivateAttr()

    def __init__(self, llm: QwenVL | None = None, **kwargs: Any) -> None:
        super().__init__()
        self._llm = llm or QwenVL(**kwargs)

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex class name."""
        return "QwenVLMultiModal"

    @property
    def llm(self) -> QwenVL:
        """The `QwenVL` doing the work."""
        return self._llm

    @property
    def metadata(self) -> MultiModalLLMMetadata:
        """The wrapped model's metadata."""
        meta = self._llm.metadata
        limit = getattr(getattr(self._llm._engine, "defaults", None), "limit_images", 4)
        return MultiModalLLMMetadata(
            context_window=meta.context_window,
            num_output=meta.num_output,
            num_input_files=limit,
            is_function_calling_model=True,
            model_name=meta.model_name,
        )

    def to_payload(self) -> dict[str, Any]:
        """What the instrumentation events record about this model (MultiModalLLM lacks it, while its
        callback wrappers call it)."""
        return self._llm.to_payload()

    def complete(self, prompt: str, image_documents: Sequence[Any], **kwargs: Any) -> CompletionResponse:
        """Answer ``prompt`` about ``image_documents`` (ImageDocument/ImageNode/ImageBlock)."""
        return self._llm.complete(prompt, image_documents=list(image_documents), **kwargs)

    def stream_complete(self, prompt: str, image_documents: Sequence[Any], **kwargs: Any) -> CompletionResponseGen:
        """Streamed `complete`."""
        return self._llm.stream_complete(prompt, image_documents=list(image_documents), **kwargs)

    async def acomplete(self, prompt: str, image_documents: Sequence[Any], **kwargs: Any) -> CompletionResponse:
        """Async `complete`."""
        return await self._llm.acomplete(prompt, image_documents=list(image_documents), **kwargs)

    async def astream_complete(
        self, prompt: str, image_documents: Sequence[Any], **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async streamed `complete`."""
        return await self._llm.astream_complete(prompt, image_documents=list(image_documents), **kwargs)

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Chat (messages may hold ImageBlocks)."""
        return self._llm.chat(messages, **kwargs)

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Streamed chat."""
        return self._llm.stream_chat(messages, **kwargs)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async chat."""
        return await self._llm.achat(messages, **kwargs)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async streamed chat."""
        return await self._llm.astream_chat(messages, **kwargs)
