"""Golden strings for the grounding, tool-call and structured-output parsers."""

from __future__ import annotations

import pytest
from PIL import Image as PILImage
from pydantic import BaseModel

from qwenvl.errors import StructuredOutputError
from qwenvl.grounding import GroundingParseError, draw_boxes, parse_bbox_2d, parse_boxes, parse_ref_boxes
from qwenvl.prompt import forced_tool_schema, parse_forced_call, parse_tool_calls, tools_system_prompt
from qwenvl.structured import json_schema_of, parse_structured

QWEN2 = (
    "<|object_ref_start|>the cat<|object_ref_end|><|box_start|>(100,200),(500,800)<|box_end|> and "
    "<|object_ref_start|>dogs<|object_ref_end|><|box_start|>(0,0),(250,250)<|box_end|>"
    "<|box_start|>(750,750),(999,999)<|box_end|>"
)


def test_qwen2vl_boxes_to_pixels() -> None:
    assert parse_ref_boxes(QWEN2) == [
        ("the cat", (100.0, 200.0, 500.0, 800.0)),
        ("dogs", (0.0, 0.0, 250.0, 250.0)),
        ("dogs", (750.0, 750.0, 999.0, 999.0)),
    ]
    boxes = parse_boxes(QWEN2, (2000, 1000))
    assert boxes[0].xyxy == (200.0, 200.0, 1000.0, 800.0) and boxes[0].label == "the cat"
    assert boxes[2].xyxy == pytest.approx((1500.0, 750.0, 1998.0, 999.0))


def test_qwen2vl_malformed_boxes() -> None:
    text = (
        "<|box_start|>(100,200)<|box_end|>"  # one point
        "<|box_start|>(1200,5),(10,10)<|box_end|>"  # off the grid
        "<|box_start|>(a,b),(c,d)<|box_end|>"
        "<|box_start|>(300, 400) , (100,200)<|box_end|>"  # swapped corners, spaces: fine
        "<|box_start|>(1,2),(3,4)"  # never closed
    )
    assert parse_ref_boxes(text) == [(None, (100.0, 200.0, 300.0, 400.0))]
    with pytest.raises(GroundingParseError, match="malformed"):
        parse_ref_boxes(text, strict=True)


def test_bbox_2d_json_in_resized_pixels() -> None:
    text = 'Found:\n```json\n[{"bbox_2d": [14, 28, 280, 140], "label": "logo"}, {"bbox_2d": [0, 0, 10]}]\n```'
    assert parse_bbox_2d(text) == [("logo", (14.0, 28.0, 280.0, 140.0))]
    # the model saw 1280x960 resized to 504x364 (max_pixels 256*28*28)
    [box] = parse_boxes(text, (1280, 960), max_pixels=256 * 28 * 28)
    assert box.xyxy == pytest.approx((14 * 1280 / 504, 28 * 960 / 364, 280 * 1280 / 504, 140 * 960 / 364))
    [same] = parse_boxes(text, (1280, 960), model_input_size=(504, 364))
    assert same == box
    assert parse_bbox_2d('{"bbox_2d": [5, 5, 50, 50]}') == [(None, (5.0, 5.0, 50.0, 50.0))]
    assert parse_bbox_2d("no json here [1, 2") == []
    assert parse_bbox_2d('[{"bbox_2d": [1, -2, 3, 4]}, {"bbox_2d": "x"}, 7]') == []
    with pytest.raises(GroundingParseError):
        parse_bbox_2d('[{"bbox_2d": [1, 2, 3]}]', strict=True)


def test_boxes_are_clipped_and_drawn() -> None:
    [box] = parse_boxes('[{"bbox_2d": [-0, 0, 9000, 50]}]', (100, 100), model_input_size=(100, 100))
    assert box.xyxy == (0.0, 0.0, 100.0, 50.0)
    image = PILImage.new("RGB", (100, 100), "white")
    drawn = draw_boxes(image, [box], color=(255, 0, 0), width=2)
    assert drawn.getpixel((50, 0)) == (255, 0, 0) and drawn.getpixel((50, 25)) == (255, 255, 255)
    assert image.getpixel((50, 0)) == (255, 255, 255)  # the original is untouched


TOOL = {"type": "function", "function": {"name": "add", "parameters": {"type": "object", "properties": {}}}}


def test_tool_call_parser_golden() -> None:
    text = (
        'Let me check.\n<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>\n'
        '<tool_call>{"name": "mul", "arguments": "{\\"x\\": 3}"}</tool_call>'
        "<tool_call>{not json}</tool_call>"
        '<tool_call>{"arguments": {}}</tool_call>'
        '<tool_call>{"name": "cut", "arguments": {"a": 1'
    )
    rest, calls, invalid = parse_tool_calls(text)
    assert rest == "Let me check."
    assert [(c.name, c.arguments) for c in calls] == [("add", {"a": 1, "b": 2}), ("mul", {"x": 3})]
    assert [i.raw for i in invalid] == ["{not json}", '{"arguments": {}}', '{"name": "cut", "arguments": {"a": 1']
    assert all(i.error for i in invalid)
    assert len({c.id for c in calls}) == 2
    assert parse_tool_calls("plain answer") == ("plain answer", [], [])


def test_tools_prompt_and_forced_schema() -> None:
    prompt = tools_system_prompt([TOOL])
    assert prompt.startswith("# Tools") and '"name": "add"' in prompt and "<tool_call>" in prompt
    named = forced_tool_schema([TOOL, {"name": "mul", "parameters": {"type": "object"}}], {"function": {"name": "mul"}})
    assert named["properties"]["name"] == {"const": "mul"}
    both = forced_tool_schema([TOOL, {"name": "mul"}], "required")
    assert len(both["anyOf"]) == 2
    assert parse_forced_call('{"name": "add", "arguments": {}}').name == "add"
    with pytest.raises(StructuredOutputError) as info:
        parse_forced_call('{"name": 3}')
    assert info.value.raw_text == '{"name": 3}'


class Point(BaseModel):
    x: int
    y: int


def test_structured_parse() -> None:
    assert parse_structured('{"x": 1, "y": 2}', Point, finish_reason="stop") == Point(x=1, y=2)
    schema = json_schema_of(Point)
    assert parse_structured('{"x": 1, "y": 2}', schema, finish_reason="stop") == {"x": 1, "y": 2}
    with pytest.raises(StructuredOutputError, match="max_tokens") as cut:
        parse_structured('{"x": 1', Point, finish_reason="length")
    assert cut.value.raw_text == '{"x": 1'
    with pytest.raises(StructuredOutputError, match="Point"):
        parse_structured('{"x": "a", "y": 2}', Point, finish_reason="stop")
    with pytest.raises(StructuredOutputError, match="schema"):
        parse_structured('{"x": "a"}', schema, finish_reason="stop")
    wrapped = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}}
    assert json_schema_of(wrapped) == schema
    assert json_schema_of({"type": "json_object"}) == {"type": "object"}
