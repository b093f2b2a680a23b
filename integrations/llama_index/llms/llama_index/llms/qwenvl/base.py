"""`QwenVL`: Qwen2-VL (on vLLM) as a LlamaIndex function-calling LLM with image blocks."""

from __future__ import annotations

import json
import os
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
    ImageBlock,
    LLMMetadata,
    MessageRole,
    TextBlock,
    ToolCallBlock,
    VideoBlock,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import BaseTool

from qwenvl import ChatRequest, Engine, Image, Message, SamplingOptions, Text, ToolCall, Usage, Video, create_engine
from qwenvl.engine.factory import adapter_retries, model_engine_options, plan_engine
from qwenvl.engine.retry import agenerate_retrying, astream_retrying, generate_retrying, stream_retrying
from qwenvl.errors import RequestError
from qwenvl.messages import ChatChunk, ChatResult, Part

__all__ = ["QwenVL", "to_qwen_messages"]

_ROLES = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


class QwenVL(FunctionCallingLLM):
    """Qwen2-VL served by vLLM, for LlamaIndex chat, RAG and agents.

    Give ``model`` (a hub id or folder; an in-process `qwenvl.VLLMEngine` starts on first use), ``base_url``
    with ``model`` (a `qwenvl.VLLMServerEngine`), or ``engine`` (any `qwenvl.Engine`, shareable).
    ``ChatMessage.blocks`` may hold `TextBlock`, `ImageBlock` (url, path, bytes or base64) and `VideoBlock`
    (path or url); any other block raises.

    ``model`` and ``base_url`` default to $QWENVL_MODEL and $QWENVL_BASE_URL. ``min_pixels``/``max_pixels`` and
    ``timeout`` (a deadline per call) apply to every engine, per request. ``max_retries`` retries a call whose
    failure is transient, on every engine: a server engine this LLM builds retries itself (per HTTP attempt); an
    in-process engine, or an ``engine=`` given, is retried here after a server error or after the engine died,
    which is then restarted (`qwenvl.engine.retry`); a stream only before its first piece. ``engine_kwargs``
    configure the engine this LLM builds (the same option as `ChatQwenVL`'s) and raise with ``engine=``, as do
    keys that engine does not take.
    """

    model: str | None = Field(default_factory=lambda: os.environ.get("QWENVL_MODEL"), description="hub id or folder")
    base_url: str | list[str] | None = Field(
        default_factory=lambda: os.environ.get("QWENVL_BASE_URL") or None,
        description="vLLM server URL(s), e.g. http://h:8000/v1",
    )
    temperature: float = Field(default=0.0, description="0 is greedy decoding")
    max_tokens: int = Field(default=512, description="the most tokens an answer may have")
    min_pixels: int | None = Field(default=None, description="default per-image minimum pixels")
    max_pixels: int | None = Field(default=None, description="default per-image maximum pixels")
    lora: str | None = Field(default=None, description="a LoRA adapter (engine-known name or PEFT folder)")
    timeout: float | None = Field(default=None, description="a deadline per call in seconds (every engine)")
    max_retries: int | None = Field(default=None, description="retries of a call that failed transiently")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="further engine arguments")

    _engine: Any = PrivateAttr(default=None)
    #: how many times this LLM sends a transiently failed request again itself (`qwenvl.engine.retry`)
    _retries: int = PrivateAttr(default=0)

    def __init__(self, engine: Engine | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        explicit: set[str] = {"base_url"} if "base_url" in self.model_fields_set and self.base_url else set()
        plan_engine(
            "QwenVL",
            engine=engine,
            model=self.model,
            base_url=self.base_url,
            options=self._engine_options(),
            explicit=explicit | set(self.engine_kwargs),
        )
        self._engine = engine
        self._retries = adapter_retries(engine, self.model, self.base_url, self.max_retries)

    @classmethod
    def class_name(cls) -> str:
        """The LlamaIndex class name."""
        return "QwenVL"

    @property
    def qwen_engine(self) -> Engine:
        """The engine (started on first use when built from ``model``)."""
        if self._engine is None:
            self._engine = create_engine(self.model, self.base_url, **self._engine_options())
        return self._engine

    def _engine_options(self) -> dict[str, Any]:
        """The options of the engine this LLM builds (None: the engine's default)."""
        return model_engine_options(
            self.model,
            self.base_url,
            self.engine_kwargs,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
            max_retries=self.max_retries,
            timeout=self.timeout,
        )

    @property
    def metadata(self) -> LLMMetadata:
        """Context window from the engine's max_model_len (when the engine is running), and capabilities."""
        window = int(self._engine.max_model_len) if self._engine is not None else 32768
        name = self.model or str(getattr(self._engine, "model_name", "qwen2-vl"))
        return LLMMetadata(
            context_window=window,
            num_output=self.max_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=name,
        )

    # ------------------------------------------------------------------ requests and responses

    def _request(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatRequest:
        sampling = SamplingOptions(
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            temperature=kwargs.get("temperature", self.temperature),
            top_p=kwargs.get("top_p", 1.0),
            stop=kwargs.get("stop"),
            seed=kwargs.get("seed"),
        )
        return ChatRequest.for_call(
            to_qwen_messages(messages),
            sampling,
            kwargs,
            lora=self.lora,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
            timeout=self.timeout,
        )

    def _response(self, result: ChatResult) -> ChatResponse:
        result.raise_for_error()
        blocks: list[Any] = [TextBlock(text=result.text)] if result.text else []
        blocks += [
            ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in result.tool_calls
        ]
        message = ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks)
        if result.parsed is not None:
            message.additional_kwargs["parsed"] = result.parsed
        return ChatResponse(message=message, raw={"usage": result.usage, "finish_reason": result.finish_reason},
                            additional_kwargs=usage_kwargs(result.usage))  # fmt: skip

    def _chunk_response(self, chunk: ChatChunk, text: str) -> ChatResponse:
        if chunk.error is not None:
            raise chunk.error
        blocks: list[Any] = [TextBlock(text=text)]
        blocks += [
            ToolCallBlock(tool_call_id=c.id, tool_name=c.name, tool_kwargs=c.arguments) for c in chunk.tool_calls
        ]
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks),
            delta=chunk.text,
            raw={"finish_reason": chunk.finish_reason, "usage": chunk.usage},
            additional_kwargs=usage_kwargs(chunk.usage),
        )

    # ------------------------------------------------------------------ chat

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """One answer."""
        [result] = generate_retrying(self.qwen_engine, [self._request(messages, **kwargs)], self._retries)
        return self._response(result)

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """One answer, through the engine's async path."""
        [result] = await agenerate_retrying(self.qwen_engine, [self._request(messages, **kwargs)], self._retries)
        return self._response(result)

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """The answer as it is generated; each response holds the text so far and the new ``delta``."""
        request = self._request(messages, **kwargs)

        def gen() -> ChatResponseGen:
            text = ""
            for chunk in stream_retrying(self.qwen_engine, request, self._retries):
                text += chunk.text
                yield self._chunk_response(chunk, text)

        return gen()

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async `stream_chat`."""
        request = self._request(messages, **kwargs)

        async def gen() -> ChatResponseAsyncGen:
            text = ""
            async for chunk in astream_retrying(self.qwen_engine, request, self._retries):
                text += chunk.text
                yield self._chunk_response(chunk, text)

        return gen()

    # ------------------------------------------------------------------ completion (a one-turn chat)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Complete ``prompt`` as a user turn; ``image_documents``/``images`` add pictures to it."""
        response = self.chat(
            [_user_turn(prompt, kwargs.pop("image_documents", None) or kwargs.pop("images", None))], **kwargs
        )
        return CompletionResponse(
            text=response.message.content or "", raw=response.raw, additional_kwargs=response.additional_kwargs
        )

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async `complete`."""
        message = _user_turn(prompt, kwargs.pop("image_documents", None) or kwargs.pop("images", None))
        response = await self.achat([message], **kwargs)
        return CompletionResponse(
            text=response.message.content or "", raw=response.raw, additional_kwargs=response.additional_kwargs
        )

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Streamed `complete`."""
        message = _user_turn(prompt, kwargs.pop("image_documents", None) or kwargs.pop("images", None))
        stream = self.stream_chat([message], **kwargs)

        def gen() -> CompletionResponseGen:
            for r in stream:
                yield CompletionResponse(text=r.message.content or "", delta=r.delta, raw=r.raw)

        return gen()

    @llm_completion_callback()
    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        """Async streamed `complete`."""
        message = _user_turn(prompt, kwargs.pop("image_documents", None) or kwargs.pop("images", None))
        stream = await self.astream_chat([message], **kwargs)

        async def gen() -> CompletionResponseAsyncGen:
            async for r in stream:
                yield CompletionResponse(text=r.message.content or "", delta=r.delta, raw=r.raw)

        return gen()

    # ------------------------------------------------------------------ tools

    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: str | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The chat arguments for a call with tools; ``tool_required`` forces a (schema-valid) call."""
        messages = list(chat_history or [])
        if user_msg is not None:
            messages.append(
                ChatMessage(role=MessageRole.USER, content=user_msg) if isinstance(user_msg, str) else user_msg
            )
        specs = [t.metadata.to_openai_tool() for t in tools]
        choice = tool_choice or ("required" if tool_required else "auto")
        return {"messages": messages, "tools": specs or None, "tool_choice": choice if specs else None, **kwargs}

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The tool calls of a response."""
        calls = [
            ToolSelection(
                tool_id=b.tool_call_id or "",
                tool_name=b.tool_name,
                tool_kwargs=b.tool_kwargs if isinstance(b.tool_kwargs, dict) else json.loads(b.tool_kwargs),
            )
            for b in response.message.blocks
            if isinstance(b, ToolCallBlock)
        ]
        if not calls and error_on_no_tool_call:
            raise RequestError(f"expected at least one tool call, got: {response.message.content!r}")
        return calls


def usage_kwargs(usage: Usage | None) -> dict[str, Any]:
    """The token counts every response carries in ``additional_kwargs`` (a stream's only on its last chunk)."""
    if usage is None:
        return {}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "image_tokens": usage.image_tokens,
        "video_tokens": usage.video_tokens,
    }


def _user_turn(prompt: str, images: Sequence[Any] | None) -> ChatMessage:
    blocks: list[Any] = []
    for item in images or []:
        if isinstance(item, ImageBlock):
            blocks.append(item)
        else:  # an ImageDocument / ImageNode
            blocks.append(
                ImageBlock(
                    image=getattr(item, "image", None) or None,
                    path=getattr(item, "image_path", None) or None,
                    url=getattr(item, "image_url", None) or None,
                    image_mimetype=getattr(item, "image_mimetype", None),
                )
            )
    blocks.append(TextBlock(text=prompt))
    return ChatMessage(role=MessageRole.USER, blocks=blocks)


def to_qwen_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    """Convert LlamaIndex chat messages; raises RequestError on a role or block qwenvl cannot carry."""
    out = []
    for msg in messages:
        role = _ROLES.get(msg.role)
        if role is None:
            raise RequestError(f"QwenVL cannot send a message with role {msg.role!r}.")
        parts: list[Part] = []
        calls: list[ToolCall] = []
        for block in msg.blocks:
            if isinstance(block, TextBlock):
                parts.append(Text(block.text))
            elif isinstance(block, ImageBlock):
                parts.append(Image(_image_source(block)))
            elif isinstance(block, VideoBlock):
                source = str(block.path) if block.path else str(block.url) if block.url else None
                if source is None:
                    raise RequestError("QwenVL reads videos from a path or file URL; save the video bytes first.")
                parts.append(Video(source, fps=block.fps))
            elif isinstance(block, ToolCallBlock):
                kwargs = _tool_arguments(block.tool_name, block.tool_kwargs)
                calls.append(ToolCall(name=block.tool_name, arguments=kwargs, id=block.tool_call_id or ""))
            else:
                raise RequestError(
                    f"QwenVL cannot read {type(block).__name__} blocks; it takes TextBlock, ImageBlock, VideoBlock "
                    "and ToolCallBlock."
                )
        for call in msg.additional_kwargs.get("tool_calls", []) or []:  # OpenAI-style history
            fn = call.get("function", call)
            args = fn.get("arguments", {})
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                raise RequestError(f"a tool call in additional_kwargs['tool_calls'] names no function: {call!r:.200}.")
            calls.append(ToolCall(name=fn["name"], arguments=_tool_arguments(fn["name"], args), id=call.get("id", "")))
        out.append(
            Message(
                role,  # type: ignore[arg-type]
                parts,
                tool_calls=calls,
                tool_call_id=msg.additional_kwargs.get("tool_call_id"),
                name=msg.additional_kwargs.get("name"),
            )
        )
    return out


def _image_source(block: ImageBlock) -> Any:
    if block.image is not None:
        return block.resolve_image(as_base64=False).read()
    if block.path is not None:
        return str(block.path)
    if block.url is not None:
        return str(block.url)
    raise RequestError("an ImageBlock needs image bytes, a path or a url.")


def _tool_arguments(name: str, value: Any) -> dict[str, Any]:
    """A tool call's arguments as a dict; `RequestError` naming the tool when they are not a JSON object."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise RequestError(
                f"the arguments of the tool call {name!r} are not valid JSON ({exc}); pass a dict or a JSON object."
            ) from exc
    if not isinstance(value, dict):
        raise RequestError(
            f"the arguments of the tool call {name!r} must be a JSON object, got {type(value).__name__}."
        )
    return value
