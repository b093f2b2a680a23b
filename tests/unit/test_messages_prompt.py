"""Message types, prompt rendering through the model's chat template, and fit_to_context."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenvl import (
    ChatRequest,
    ContextOverflowError,
    Image,
    Message,
    RequestError,
    SamplingOptions,
    Text,
    ToolCall,
    fit_to_context,
)
from qwenvl.budget import image_tokens
from qwenvl.prompt import PromptRenderer
from tests.helpers import make_image


@pytest.fixture(scope="module")
def processor(tiny_model: Path):  # noqa: ANN201
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model)


def test_render_uses_the_chat_template(processor) -> None:  # noqa: ANN001
    request = ChatRequest(
        [
            Message("system", "Be brief."),
            Message("user", [Image(b"x"), Text("What is this?"), Image(b"y")]),
            Message("assistant", "A cat."),
            Message("user", "Sure?"),
        ]
    )
    prompt = PromptRenderer(processor).render(request)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?"
        "<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n<|im_start|>user\nSure?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_default_system_prompt_and_tool_turns(processor) -> None:  # noqa: ANN001
    call = ToolCall(name="lookup", arguments={"q": "x"}, id="c1")
    request = ChatRequest(
        [
            Message("user", "hi"),
            Message("assistant", "", tool_calls=[call]),
            Message("tool", "42", tool_call_id="c1", name="lookup"),
        ]
    )
    prompt = PromptRenderer(processor).render(request, system_prompt="TOOLS")
    assert prompt.startswith("<|im_start|>system\nTOOLS<|im_end|>")
    assert '<tool_call>\n{"name": "lookup", "arguments": {"q": "x"}}\n</tool_call>' in prompt
    assert "<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>" in prompt


def test_invalid_messages_raise() -> None:
    with pytest.raises(RequestError, match="role"):
        Message("robot", "hi")  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="Text, Image or Video"):
        Message("user", ["plain string"])  # type: ignore[list-item]
    with pytest.raises(RequestError, match="at least one message"):
        ChatRequest([])
    with pytest.raises(RequestError, match="max_tokens"):
        SamplingOptions(max_tokens=0)
    with pytest.raises(RequestError, match="min_pixels"):
        Image(b"x", min_pixels=5000, max_pixels=100)


def _request(*sizes: tuple[int, int], max_tokens: int = 100) -> ChatRequest:
    parts = [Image(make_image(w, h)) for w, h in sizes]
    return ChatRequest([Message("user", [*parts, Text("describe")])], SamplingOptions(max_tokens=max_tokens))


def test_fit_to_context_leaves_fitting_requests_alone() -> None:
    request = _request((640, 480))
    assert fit_to_context(request, 4096, text_tokens=30) is request


def test_fit_to_context_shrinks_large_images_first() -> None:
    request = _request((2000, 1500), (200, 150))
    before = [image_tokens(2000, 1500, max_pixels=1280 * 784), image_tokens(200, 150, max_pixels=1280 * 784)]
    fitted = fit_to_context(request, 1000, text_tokens=30, max_pixels=1280 * 784)
    big, small = fitted.images()
    after = [
        image_tokens(2000, 1500, big.min_pixels, big.max_pixels),
        image_tokens(200, 150, small.min_pixels or 3136, small.max_pixels or 1280 * 784),
    ]
    assert before[0] > after[0] and after[1] == before[1]  # the small image keeps its detail
    assert 30 + sum(after) + 100 <= 1000
    # close to the budget, not shrunk needlessly
    assert 30 + sum(after) + 100 > 1000 - 0.15 * after[0] - 10


def test_fit_to_context_overflow_says_by_how_much() -> None:
    request = _request((640, 480), max_tokens=100)
    with pytest.raises(ContextOverflowError, match="too many") as info:
        fit_to_context(request, 200, text_tokens=150)
    smallest = image_tokens(640, 480, 4 * 28 * 28, 4 * 28 * 28)
    assert info.value.overflow == 150 + smallest + 100 - 200
    assert "max_model_len" in str(info.value)


@pytest.mark.parametrize("value", [None, 3, b"bytes", ["a"]])
def test_text_that_is_not_a_str_is_a_typed_error(value: object) -> None:
    from qwenvl.errors import RequestError

    with pytest.raises(RequestError, match="must be a str"):
        Text(value)  # type: ignore[arg-type]
