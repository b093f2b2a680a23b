"""Bad requests of many kinds, long requests, and health checks shared by the reliability tests."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image as PILImage

from qwenvl import ChatRequest, Image, Message, Text, ToolCall, Video
from qwenvl.errors import (
    ContextOverflowError,
    ImageSizeError,
    MediaDecodeError,
    MediaNotFoundError,
    MediaPolicyError,
    QwenVLError,
    RequestError,
    UnsupportedMediaError,
)
from qwenvl_testkit.helpers import (  # noqa: F401 - the reliability tests import them from here
    LONG_SCHEMA,
    assert_answers,
    await_idle,
    cancel_stream_after,
    good_request,
    long_request,
    make_image,
    png_bytes,
    wait_idle,
)


def _user(*parts: Any) -> list[Message]:
    return [Message("user", list(parts))]


def _req(*parts: Any, **kwargs: Any) -> ChatRequest:
    return ChatRequest(_user(*parts), **kwargs)


def _mutated(request: ChatRequest, target: str, field: str, value: Any) -> ChatRequest:
    """A request changed after construction, past its validation (what a careless or hostile caller does)."""
    obj = request.sampling if target == "sampling" else request
    object.__setattr__(obj, field, value)
    return request


def _bomb_png() -> bytes:
    """A 13000x13000 PNG of a few kB: its header claims 169 MP."""
    buf = io.BytesIO()
    PILImage.new("1", (13000, 13000)).save(buf, format="PNG")
    return buf.getvalue()


def _pdf_bytes() -> bytes:
    return b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF"


def _bad_tool_history() -> ChatRequest:
    call = ToolCall("lookup", {"q": "x"})
    object.__setattr__(call, "arguments", {"when": object()})  # not JSON-encodable, past validation
    return ChatRequest([Message("user", "hi"), Message("assistant", "", tool_calls=[call]), Message("user", "go on")])


@dataclass(frozen=True)
class BadKind:
    """One kind of bad input: how to build it and the error it must give."""

    name: str
    build: Callable[[], Any]
    error: type[QwenVLError]


def bad_kinds(tmp_dir: str) -> list[BadKind]:
    """Bad requests an engine must fail alone, each with its typed error."""
    return [
        BadKind("truncated PNG", lambda: _req(Image(png_bytes(make_image(64, 64))[:120])), MediaDecodeError),
        BadKind("empty image bytes", lambda: _req(Image(b"")), MediaDecodeError),
        BadKind("missing image file", lambda: _req(Image(f"{tmp_dir}/nope.png")), MediaNotFoundError),
        BadKind("folder as image", lambda: _req(Image(tmp_dir)), MediaNotFoundError),
        BadKind("PDF bytes as image", lambda: _req(Image(_pdf_bytes())), UnsupportedMediaError),
        BadKind("int as image", lambda: _req(Image(42)), UnsupportedMediaError),  # type: ignore[arg-type]
        BadKind("1x300 image", lambda: _req(Image(PILImage.new("RGB", (1, 300)))), ImageSizeError),
        BadKind("169 MP header", lambda: _req(Image(_bomb_png())), ImageSizeError),
        BadKind("bad base64", lambda: _req(Image("data:image/png;base64,@@@")), MediaDecodeError),
        BadKind("ftp URL", lambda: _req(Image("ftp://example.com/x.png")), UnsupportedMediaError),
        BadKind("loopback URL", lambda: _req(Image("http://127.0.0.1:9/x.png")), MediaPolicyError),
        BadKind("NAT64 URL", lambda: _req(Image("http://[64:ff9b::a9fe:a9fe]/x.png")), MediaPolicyError),
        BadKind("mapped v6 URL", lambda: _req(Image("http://[::ffff:10.0.0.1]/x.png")), MediaPolicyError),
        BadKind(
            "five images",
            lambda: _req(*[Image(png_bytes(make_image(40, 40, k))) for k in range(5)]),
            RequestError,
        ),
        BadKind("context overflow", lambda: ChatRequest([Message("user", "word " * 6000)]), ContextOverflowError),
        BadKind("unknown LoRA", lambda: ChatRequest([Message("user", "x")], lora="no-such-adapter"), RequestError),
        BadKind("tool_choice without tools", lambda: _req(Text("x"), tool_choice="required"), RequestError),
        BadKind(
            "forced call and schema",
            lambda: ChatRequest(
                _user(Text("x")),
                tools=[{"name": "f", "parameters": {"type": "object"}}],
                tool_choice="f",
                response_format={"type": "object"},
            ),
            RequestError,
        ),
        BadKind("max_tokens=2.5", lambda: _mutated(good_request(), "sampling", "max_tokens", 2.5), RequestError),
        BadKind("temperature=nan", lambda: _mutated(good_request(), "sampling", "temperature", math.nan), RequestError),
        BadKind("temperature=inf", lambda: _mutated(good_request(), "sampling", "temperature", math.inf), RequestError),
        BadKind("seed=2**64", lambda: _mutated(good_request(), "sampling", "seed", 2**64), RequestError),
        BadKind("stop=[1]", lambda: _mutated(good_request(), "sampling", "stop", [1]), RequestError),
        BadKind("tools=['x']", lambda: _mutated(good_request(), "request", "tools", ["x"]), RequestError),
        BadKind("tool call args not JSON", _bad_tool_history, RequestError),
        BadKind("a dict, not a ChatRequest", lambda: {"messages": []}, RequestError),
        BadKind(
            "video of one frame",
            lambda: _req(Video([png_bytes(make_image(56, 56))]), Text("x")),
            MediaDecodeError,
        ),
        BadKind("response_format not a schema", lambda: _req(Text("x"), response_format=42), RequestError),
        BadKind(
            "invalid JSON schema",
            lambda: _req(Text("x"), response_format={"type": "bogus"}),
            RequestError,
        ),
    ]
