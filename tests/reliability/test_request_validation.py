"""Bad values are refused where requests are built, with a `RequestError` naming the field."""

from __future__ import annotations

import math

import pytest

from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text, ToolCall, Video
from qwenvl.errors import MediaPolicyError, RequestError
from qwenvl.media import MediaPolicy

USER = [Message("user", "hi")]

SAMPLING_CASES = [
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -3}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_tokens": 2**40}, "max_tokens"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": math.inf}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": math.nan}, "top_p"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"seed": 2**64}, "seed"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"stop": [1, 2]}, "stop"),
    ({"stop": [""]}, "stop"),
    ({"stop": ["x"] * 65}, "stop"),
    ({"stop": 5}, "stop"),
]


@pytest.mark.parametrize(("kwargs", "field"), SAMPLING_CASES, ids=[f"{k}" for k, _ in SAMPLING_CASES])
def test_sampling_options_refuse_bad_values(kwargs: dict, field: str) -> None:
    with pytest.raises(RequestError, match=field):
        SamplingOptions(**kwargs)


def test_sampling_options_keep_good_values() -> None:
    options = SamplingOptions(max_tokens=8, temperature=0.7, top_p=0.9, seed=2**63 - 1, stop="END")
    assert options.stop == ("END",)


def test_a_changed_options_object_is_caught_again() -> None:
    options = SamplingOptions()
    object.__setattr__(options, "max_tokens", 2.5)  # what a caller bypassing the constructor does
    with pytest.raises(RequestError, match="max_tokens"):
        options.validate()


REQUEST_CASES = [
    (lambda: ChatRequest([]), "at least one message"),
    (lambda: ChatRequest("hello"), "list of Message"),
    (lambda: ChatRequest([{"role": "user", "content": "x"}]), "Message objects"),
    (lambda: ChatRequest(USER, sampling={"max_tokens": 3}), "SamplingOptions"),
    (lambda: ChatRequest(USER, tools=["x"]), r"tools\[0\]"),
    (lambda: ChatRequest(USER, tools={"name": "f"}), "list of tool definitions"),
    (lambda: ChatRequest(USER, tools=[{"type": "function", "function": {"parameters": {}}}]), "no function name"),
    (lambda: ChatRequest(USER, tools=[{"name": "f", "parameters": "int"}]), "parameters"),
    (lambda: ChatRequest(USER, tools=[{"name": "f", "parameters": {"default": math.nan}}]), "JSON"),
    (lambda: ChatRequest(USER, tools=[{"type": "retrieval"}]), "not a function tool"),
    (lambda: ChatRequest(USER, tool_choice=3), "tool_choice"),
    (lambda: ChatRequest(USER, request_id=""), "request_id"),
    (lambda: ChatRequest(USER, lora=7), "lora"),
    (lambda: Message("robot", "x"), "role"),
    (lambda: Message("user", ["text"]), "Text, Image or Video"),
    (lambda: Message("user", b"bytes"), "string or a list"),
    (lambda: Message("assistant", "", tool_calls=[{"name": "f"}]), "ToolCall objects"),
    (lambda: ToolCall("f", {"when": object()}), "JSON-encodable"),
    (lambda: ToolCall("f", {"x": math.nan}), "JSON-encodable"),
    (lambda: ToolCall("f", [1, 2]), "dict"),
    (lambda: ToolCall("", {}), "name"),
    (lambda: Image("x.png", max_pixels=2.5), "integer"),
    (lambda: Image("x.png", min_pixels=0), "positive"),
    (lambda: Image("x.png", min_pixels=100, max_pixels=10), "larger"),
    (lambda: Video(["a", "b"], fps=math.nan), "fps"),
    (lambda: Video(["a", "b"], nframes=1), "nframes"),
    (lambda: Video(["a", "b"], sample_fps=0), "sample_fps"),
]


@pytest.mark.parametrize(("build", "words"), REQUEST_CASES, ids=[w for _, w in REQUEST_CASES])
def test_requests_refuse_malformed_parts(build, words: str) -> None:  # noqa: ANN001
    with pytest.raises(RequestError, match=words):
        build()


@pytest.mark.parametrize(
    "kwargs",
    [{"timeout": 0}, {"timeout": math.inf}, {"max_bytes": 0}, {"max_image_pixels": -1}, {"max_redirects": 1.5}],
)
def test_media_policy_refuses_bad_limits(kwargs: dict) -> None:
    with pytest.raises(MediaPolicyError, match=next(iter(kwargs))):
        MediaPolicy(**kwargs)


def test_text_parts_still_build() -> None:
    request = ChatRequest([Message("user", [Text("a"), Image("x.png", max_pixels=256 * 28 * 28)])])
    assert len(request.images()) == 1
