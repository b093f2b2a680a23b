"""Structured output and tool calling through the real engines on the tiny (random) model."""

from __future__ import annotations

import jsonschema
import pytest
from pydantic import BaseModel, Field

from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text
from qwenvl.errors import RequestError, StructuredOutputError
from tests.helpers import make_image

pytestmark = pytest.mark.engine


class LineItem(BaseModel):
    description: str = Field(max_length=12, description="what was bought")
    quantity: int = Field(ge=0, le=999)
    price: float = Field(ge=0, le=10000)


class Invoice(BaseModel):
    number: str = Field(max_length=10)
    paid: bool
    items: list[LineItem] = Field(min_length=1, max_length=3)
    currency: str = Field(pattern="^(EUR|USD|GBP)$")


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"type": "string", "enum": ["C", "F"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ZOOM = {
    "type": "function",
    "function": {
        "name": "zoom",
        "description": "Look closer at a region of the image",
        "parameters": {
            "type": "object",
            "properties": {
                "bbox": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": 1000},
                    "minItems": 4,
                    "maxItems": 4,
                }
            },
            "required": ["bbox"],
        },
    },
}


def _ask(i: int, **kwargs: object) -> ChatRequest:
    content = [Image(make_image(120 + i, 90 + i, seed=i), max_pixels=64 * 784), Text(f"Read document {i}.")]
    return ChatRequest([Message("user", content)], SamplingOptions(max_tokens=400, temperature=0.7, seed=i), **kwargs)  # type: ignore[arg-type]


def test_100_structured_outputs_validate(vllm_engine) -> None:  # noqa: ANN001
    results = vllm_engine.generate([_ask(i, response_format=Invoice) for i in range(100)])
    failures = [r.error for r in results if not r.ok]
    assert not failures, failures[:3]
    assert all(isinstance(r.parsed, Invoice) for r in results)
    assert len({r.text for r in results}) > 50  # sampled, not one memorized answer


def test_100_forced_tool_calls_validate(vllm_engine) -> None:  # noqa: ANN001
    requests = [
        _ask(i, tools=[WEATHER, ZOOM], tool_choice="required" if i % 2 else {"function": {"name": "zoom"}})
        for i in range(100)
    ]
    results = vllm_engine.generate(requests)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, ZOOM)}
    for i, r in enumerate(results):
        assert r.finish_reason == "tool_calls" and len(r.tool_calls) == 1
        call = r.tool_calls[0]
        jsonschema.validate(call.arguments, schemas[call.name])
        if i % 2 == 0:
            assert call.name == "zoom"


def test_cut_off_structured_output_keeps_raw_text(vllm_engine) -> None:  # noqa: ANN001
    request = ChatRequest([Message("user", "Give an invoice.")], SamplingOptions(max_tokens=5), response_format=Invoice)
    [result] = vllm_engine.generate([request])
    assert isinstance(result.error, StructuredOutputError) and "max_tokens" in str(result.error)
    assert result.error.raw_text == result.text and result.text.startswith("{")


def test_json_schema_dict_and_stream(vllm_engine) -> None:  # noqa: ANN001
    schema = {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "maxLength": 8},
            "score": {"type": "integer", "minimum": 0, "maximum": 10},
        },
        "required": ["answer", "score"],
        "additionalProperties": False,
    }
    request = ChatRequest([Message("user", "Rate it.")], SamplingOptions(max_tokens=100), response_format=schema)
    [result] = vllm_engine.generate([request])
    assert result.ok and set(result.parsed) == {"answer", "score"}
    chunks = list(vllm_engine.stream(request))
    assert "".join(c.text for c in chunks) == result.text
    assert chunks[-1].parsed == result.parsed


def test_tool_choice_errors(vllm_engine) -> None:  # noqa: ANN001
    bad = [
        ChatRequest([Message("user", "x")], tool_choice="required"),
        ChatRequest([Message("user", "x")], tools=[WEATHER], tool_choice={"function": {"name": "nope"}}),
        ChatRequest([Message("user", "x")], tools=[WEATHER], tool_choice="required", response_format=Invoice),
    ]
    results = vllm_engine.generate([*bad, _ask(0)])
    assert all(isinstance(r.error, RequestError) for r in results[:3])
    assert results[3].ok


def test_tool_round_trip_prompt(vllm_engine) -> None:  # noqa: ANN001
    """A conversation with a call and its result renders and runs; 'none' leaves tools out of the prompt."""
    from qwenvl import ToolCall

    history = [
        Message("user", "Weather in Paris?"),
        Message("assistant", "", tool_calls=[ToolCall("get_weather", {"city": "Paris", "unit": "C"}, id="c1")]),
        Message("tool", '{"temp": 21}', tool_call_id="c1", name="get_weather"),
    ]
    with_tools = ChatRequest(history, SamplingOptions(max_tokens=8), tools=[WEATHER])
    without = ChatRequest(history, SamplingOptions(max_tokens=8), tools=[WEATHER], tool_choice="none")
    a, b = vllm_engine.generate([with_tools, without])
    assert a.ok and b.ok
    assert a.usage.prompt_tokens > b.usage.prompt_tokens  # the tools section is in the first prompt only


@pytest.mark.transformers
def test_transformers_engine_forces_tool_calls_too(hf_engine) -> None:  # noqa: ANN001
    requests = [_ask(i, tools=[WEATHER, ZOOM], tool_choice="required") for i in range(6)]
    results = hf_engine.generate(requests)
    assert all(r.ok and r.finish_reason == "tool_calls" for r in results), [r.error for r in results]
    [structured] = hf_engine.generate([_ask(1, response_format=Invoice)])
    assert structured.ok and isinstance(structured.parsed, Invoice)
