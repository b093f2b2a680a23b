"""Conversion between LangChain messages and qwenvl's chat types. Unknown input raises; nothing is dropped."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.messages.tool import tool_call_chunk as make_tool_call_chunk

from qwenvl import Image, Message, Text, ToolCall, Usage, Video
from qwenvl.errors import RequestError
from qwenvl.messages import ChatChunk, ChatResult, Part

__all__ = ["to_ai_message", "to_ai_message_chunk", "to_qwen_message", "to_qwen_messages", "usage_metadata"]

_ROLE_OF = {"human": "user", "user": "user", "ai": "assistant", "assistant": "assistant", "system": "system"}
_PIXEL_KEYS = ("min_pixels", "max_pixels")


def to_qwen_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """Convert a LangChain conversation; raises RequestError on a message or block it cannot carry."""
    return [to_qwen_message(m) for m in messages]


def to_qwen_message(message: BaseMessage) -> Message:
    """Convert one LangChain message."""
    if isinstance(message, ToolMessage):
        return Message("tool", _parts(message.content), tool_call_id=message.tool_call_id, name=message.name)
    if isinstance(message, AIMessage):
        calls = [ToolCall(name=c["name"], arguments=dict(c["args"]), id=c.get("id") or "") for c in message.tool_calls]
        return Message("assistant", _parts(message.content), tool_calls=calls)
    if isinstance(message, HumanMessage):
        return Message("user", _parts(message.content))
    if isinstance(message, SystemMessage):
        return Message("system", _parts(message.content))
    if isinstance(message, ChatMessage) and message.role in _ROLE_OF:
        return Message(_ROLE_OF[message.role], _parts(message.content))  # type: ignore[arg-type]
    raise RequestError(
        f"ChatQwenVL cannot send a {type(message).__name__}"
        + (f" with role {message.role!r}" if isinstance(message, ChatMessage) else "")
        + "; use System/Human/AI/ToolMessage."
    )


def _parts(content: str | list[Any]) -> list[Part]:
    if isinstance(content, str):
        return [Text(content)] if content else []
    return [p for block in content for p in _block(block)]


def _pixels(block: dict[str, Any], *more: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for source in (block, *more):
        for key in _PIXEL_KEYS:
            if isinstance(source.get(key), int):
                out[key] = source[key]
    return out


def _block(block: Any) -> list[Part]:
    if isinstance(block, str):
        return [Text(block)]
    if not isinstance(block, dict):
        raise RequestError(f"ChatQwenVL cannot read a content block of type {type(block).__name__}: {block!r}")
    kind = block.get("type")
    if kind == "text":
        return [Text(block.get("text", ""))]
    if kind in ("tool_call", "tool_use", "reasoning", "thinking"):
        return []  # calls are carried by AIMessage.tool_calls; reasoning is not part of the prompt
    if kind == "image_url":  # OpenAI chat-completions format
        spec = block.get("image_url")
        url = spec.get("url") if isinstance(spec, dict) else spec
        if not isinstance(url, str):
            raise RequestError(f"an image_url block needs a url string: {block!r}")
        return [Image(url, **_pixels(block, spec if isinstance(spec, dict) else {}))]
    if kind == "image":
        return [Image(_image_source(block), **_pixels(block))]
    if kind == "video":
        source = block.get("video") or block.get("url") or block.get("path")
        if source is None:
            raise RequestError(f"a video block needs 'video' (a path or a list of frames): {block!r}")
        return [
            Video(
                source,
                fps=block.get("fps"),
                nframes=block.get("nframes"),
                sample_fps=block.get("sample_fps", 2.0),
                **_pixels(block),
            )
        ]
    raise RequestError(
        f"ChatQwenVL cannot read content blocks of type {kind!r}; it takes text, image_url, image "
        "(base64, url or Qwen's 'image') and video blocks."
    )


def _image_source(block: dict[str, Any]) -> str:
    if "image" in block:  # Qwen's {"type": "image", "image": path_or_url}
        return str(block["image"])
    if block.get("base64") or block.get("source_type") == "base64":
        data = block.get("base64") or block.get("data")
        mime = block.get("mime_type") or "image/png"
        return f"data:{mime};base64,{data}"
    if block.get("url") or block.get("source_type") == "url":
        return str(block.get("url"))
    if block.get("file_id") or block.get("id"):
        raise RequestError("image blocks by file id are not supported; send base64 data or a URL.")
    raise RequestError(f"an image block needs base64 data, a url or Qwen's 'image' key: {block!r}")


def usage_metadata(usage: Usage) -> dict[str, Any]:
    """LangChain usage metadata, with image and video tokens under ``input_token_details``."""
    details = {"image": usage.image_tokens}
    if usage.video_tokens:
        details["video"] = usage.video_tokens
    return {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "input_token_details": details,
    }


def to_ai_message(result: ChatResult, model_name: str) -> AIMessage:
    """An AIMessage for a successful result."""
    return AIMessage(
        content=result.text,
        tool_calls=[tool_call(name=c.name, args=c.arguments, id=c.id) for c in result.tool_calls],
        invalid_tool_calls=[
            invalid_tool_call(name=None, args=i.raw, id=None, error=i.error) for i in result.invalid_tool_calls
        ],
        additional_kwargs={"parsed": result.parsed} if result.parsed is not None else {},
        usage_metadata=usage_metadata(result.usage),  # type: ignore[arg-type]
        response_metadata={
            "finish_reason": result.finish_reason,
            "model_name": model_name,
            "model_provider": "qwenvl",
        },
    )


def to_ai_message_chunk(chunk: ChatChunk, model_name: str) -> AIMessageChunk:
    """An AIMessageChunk for a streamed piece; the last one carries usage, finish reason and tool calls."""
    last = chunk.finish_reason is not None
    return AIMessageChunk(
        content=chunk.text,
        tool_call_chunks=[
            make_tool_call_chunk(name=c.name, args=json.dumps(c.arguments), id=c.id, index=i)
            for i, c in enumerate(chunk.tool_calls)
        ],
        usage_metadata=usage_metadata(chunk.usage) if chunk.usage else None,  # type: ignore[arg-type]
        response_metadata={"finish_reason": chunk.finish_reason, "model_name": model_name, "model_provider": "qwenvl"}
        if last
        else {},
        additional_kwargs={"parsed": chunk.parsed} if chunk.parsed is not None else {},
        chunk_position="last" if last else None,
    )
