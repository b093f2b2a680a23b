"""Qwen2.5-VL and Qwen3-VL through every engine, the grounding parser, the VLM layout backend and LoRA, with
the same exactness as Qwen2-VL: the tests of tests/engine, run per family on its tiny random checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import PIL.Image
import PIL.ImageDraw
import pytest
from pydantic import BaseModel, Field

from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text, Video
from qwenvl.errors import MediaDecodeError
from qwenvl.models import PROFILES
from tests.helpers import make_image, png_bytes

pytestmark = [pytest.mark.engine, pytest.mark.transformers]


class Item(BaseModel):
    name: str = Field(max_length=10)
    count: int = Field(ge=0, le=99)


class Receipt(BaseModel):
    number: str = Field(max_length=8)
    paid: bool
    items: list[Item] = Field(min_length=1, max_length=2)


LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look up a vendor",
        "parameters": {
            "type": "object",
            "properties": {
                "vendor": {"type": "string", "maxLength": 10},
                "year": {"type": "integer", "minimum": 2000, "maximum": 2030},
            },
            "required": ["vendor", "year"],
            "additionalProperties": False,
        },
    },
}
CROP = {
    "type": "function",
    "function": {
        "name": "crop",
        "description": "Crop a region",
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


def _mixed_requests(factor: int) -> list[ChatRequest]:
    """Text, one image, two images with a system prompt, a video: every pad kind."""
    opts = SamplingOptions(max_tokens=16)
    return [
        ChatRequest([Message("user", "Describe the chart in one line.")], opts),
        ChatRequest(
            [Message("user", [Image(make_image(640, 480, 1), max_pixels=256 * factor**2), Text("What is it?")])],
            opts,
        ),
        ChatRequest(
            [
                Message("system", "You read invoices."),
                Message("user", [Image(make_image(300, 900, 2)), Image(make_image(1200, 200, 3)), Text("Total?")]),
            ],
            opts,
        ),
        ChatRequest([Message("user", [Video([make_image(84, 84, i) for i in range(6)], nframes=4), Text("?")])], opts),
    ]


def test_engines_read_the_family_from_the_config(family: str, family_vllm: Any, family_hf: Any) -> None:
    profile = PROFILES[family]
    assert family_vllm.profile is profile and family_hf.profile is profile
    assert type(family_hf._hf_model).__name__ == profile.transformers_class
    assert family_vllm.defaults.max_pixels == 1280 * profile.factor**2


def test_vllm_and_transformers_agree(family: str, family_vllm: Any, family_hf: Any) -> None:
    """Identical prompt token ids (every image and video pad), the first 8 greedy tokens, float32; and the
    token count known before running is the count both processed."""
    factor = PROFILES[family].factor
    requests = _mixed_requests(factor)
    from_vllm = family_vllm.generate(requests)
    from_hf = [family_hf.generate([r])[0] for r in requests]
    for request, v, h in zip(requests, from_vllm, from_hf, strict=True):
        assert v.ok and h.ok, (v.error, h.error)
        assert v.prompt_token_ids == h.prompt_token_ids
        assert v.usage == h.usage
        assert v.token_ids[:8] == h.token_ids[:8]
        assert family_vllm.count_tokens(request).prompt_tokens == len(v.prompt_token_ids)
    assert from_vllm[1].usage.image_tokens == PROFILES[family].image_tokens(640, 480, None, 256 * factor**2)
    assert from_vllm[3].usage.video_tokens > 0


def test_batch_of_16_with_mixed_limits_and_one_corrupt(family: str, family_vllm: Any) -> None:
    profile = PROFILES[family]
    f2 = profile.factor**2
    requests = [
        ChatRequest(
            [
                Message(
                    "user",
                    [Image(make_image(200 + 37 * i, 150 + 23 * i, seed=i), max_pixels=(16 + 8 * i) * f2), Text(f"{i}")],
                )
            ],
            SamplingOptions(max_tokens=12),
            request_id=f"req-{i}",
        )
        for i in range(16)
    ]
    corrupt = ChatRequest([Message("user", [Image(png_bytes(make_image(40, 40))[:60]), Text("x")])], request_id="bad")
    batch = requests[:7] + [corrupt] + requests[7:]
    results = family_vllm.generate(batch)
    assert [r.request_id for r in results] == [r.request_id for r in batch]
    assert not results[7].ok and isinstance(results[7].error, MediaDecodeError)
    expected = [
        profile.image_tokens(200 + 37 * i, 150 + 23 * i, min(profile.min_pixels, (16 + 8 * i) * f2), (16 + 8 * i) * f2)
        for i in range(16)
    ]
    assert len(set(expected)) > 8
    for request, result, tokens in zip(requests, results[:7] + results[8:], expected, strict=True):
        assert result.ok, result.error
        assert result.usage.image_tokens == tokens
        assert family_vllm.count_tokens(request).prompt_tokens == result.usage.prompt_tokens
    assert family_vllm.unfinished_requests() == 0


def _ask(i: int, factor: int, **kwargs: Any) -> ChatRequest:
    content = [Image(make_image(120 + i, 90 + i, seed=i), max_pixels=64 * factor**2), Text(f"Read document {i}.")]
    return ChatRequest([Message("user", content)], SamplingOptions(max_tokens=300, temperature=0.7, seed=i), **kwargs)


def test_30_schema_outputs_and_30_forced_tool_calls_validate(family: str, family_vllm: Any) -> None:
    factor = PROFILES[family].factor
    structured = family_vllm.generate([_ask(i, factor, response_format=Receipt) for i in range(30)])
    assert all(r.ok for r in structured), [r.error for r in structured if not r.ok][:3]
    assert all(isinstance(r.parsed, Receipt) for r in structured)
    calls = family_vllm.generate(
        [
            _ask(i, factor, tools=[LOOKUP, CROP], tool_choice="required" if i % 2 else {"function": {"name": "crop"}})
            for i in range(30)
        ]
    )
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (LOOKUP, CROP)}
    for i, r in enumerate(calls):
        assert r.ok and r.finish_reason == "tool_calls" and len(r.tool_calls) == 1, r.error
        jsonschema.validate(r.tool_calls[0].arguments, schemas[r.tool_calls[0].name])
        if i % 2 == 0:
            assert r.tool_calls[0].name == "crop"


def test_tools_are_rendered_by_the_family_template(family: str, family_vllm: Any) -> None:
    """Qwen3-VL's template renders tools and tool turns itself; Qwen2.5-VL's has no tools, so qwenvl writes the
    same Hermes section. Either way the prompt carries the definitions and a tool result as a user turn."""
    from qwenvl.messages import ToolCall

    request = ChatRequest(
        [
            Message("user", "Who sold this?"),
            Message("assistant", "", tool_calls=[ToolCall(name="lookup", arguments={"vendor": "ACME", "year": 2024})]),
            Message("tool", '{"country": "DE"}'),
        ],
        SamplingOptions(max_tokens=8),
        tools=[LOOKUP],
    )
    prep = family_vllm._preparer.prepare(request)
    assert '"name": "lookup"' in prep.prompt and "<tools>" in prep.prompt
    assert '<tool_call>\n{"name": "lookup", "arguments": {"vendor": "ACME", "year": 2024}}\n</tool_call>' in prep.prompt
    assert '<|im_start|>user\n<tool_response>\n{"country": "DE"}\n</tool_response><|im_end|>' in prep.prompt
    assert prep.prompt.startswith("<|im_start|>system\n")
    [result] = family_vllm.generate([request])
    assert result.ok and result.usage.prompt_tokens == len(result.prompt_token_ids)


def test_stream_equals_generate(family: str, family_vllm: Any) -> None:
    request = _mixed_requests(PROFILES[family].factor)[1]
    [whole] = family_vllm.generate([request])
    chunks = list(family_vllm.stream(request))
    assert len(chunks) >= 3 and "".join(c.text for c in chunks) == whole.text
    assert chunks[-1].usage == whole.usage


def test_server_engine_equals_in_process(family: str, family_vllm: Any, family_server: Any) -> None:
    """Six mixed requests: same text and usage over HTTP as in-process (images, two images, video, a schema, a
    forced tool call)."""
    factor = PROFILES[family].factor
    requests = _mixed_requests(factor)[:3] + [
        ChatRequest(
            [Message("user", [Video([make_image(84, 84, i) for i in range(6)], nframes=4), Text("?")])],
            SamplingOptions(max_tokens=16),
        ),
        _ask(3, factor, response_format=Receipt),
        _ask(4, factor, tools=[LOOKUP, CROP], tool_choice="required"),
    ]
    local = family_vllm.generate(requests)
    remote = family_server.generate(requests)
    for a, b in zip(local, remote, strict=True):
        assert a.ok and b.ok, (a.error, b.error)
        assert (a.text, a.usage) == (b.text, b.usage)
        assert [(c.name, c.arguments) for c in a.tool_calls] == [(c.name, c.arguments) for c in b.tool_calls]
    assert remote[3].usage.video_tokens > 0 and remote[5].tool_calls


def test_document_parser_vlm_blocks_inside_the_page(family: str, family_vllm: Any, tmp_path: Path) -> None:
    from qwenvl.layout import BlockType, DocumentParser
    from qwenvl_testkit.synthetic_pages import make_pages, write_pdf

    profile = PROFILES[family]
    pdf = write_pdf([p.image for p in make_pages(2, seed=7)], tmp_path / "scan.pdf")
    parser = DocumentParser(
        engine=family_vllm,
        backend="vlm",
        max_pixels=64 * profile.factor**2,
        max_tokens=512,
        min_blocks=2,
        max_blocks=4,
        max_text_chars=24,
    )
    assert parser.options.vlm.coords == ("pixels" if profile.box_convention == "pixels" else "grid")
    assert parser.options.vlm.family == family
    [doc] = parser.parse_many([pdf])
    assert len(doc.pages) == 2
    for page in doc.pages:
        assert page.status == "ok" and page.backend == "vlm", page.error
        assert 2 <= len(page.blocks) <= 4
        for block in page.blocks:
            assert isinstance(block.type, BlockType) and block.origin == "vlm"
            assert 0 <= block.bbox.x0 <= block.bbox.x1 <= page.width
            assert 0 <= block.bbox.y0 <= block.bbox.y1 <= page.height


def _lora_image(i: int) -> PIL.Image.Image:
    im = PIL.Image.new("RGB", (224, 224), ((i * 97) % 256, (i * 53) % 256, (i * 29) % 256))
    PIL.ImageDraw.Draw(im).rectangle(
        (20 * i % 150, 10, 20 * i % 150 + 60, 200), fill=(255 - (i * 40) % 256, 30 * i % 256, 120)
    )
    return im


def test_lora_on_8_examples_reproduces_the_targets(
    family: str, family_model: Path, family_vllm: Any, tmp_path: Path
) -> None:
    """The protocol of the Qwen2-VL LoRA test: 8 image -> JSON examples, served through VLLMEngine."""
    from qwenvl.finetune import Example, FinetuneConfig, finetune

    pixels = 64 * PROFILES[family].factor ** 2
    targets = [json.dumps({"id": i, "total": round(10.5 * (i + 1), 1)}) for i in range(8)]

    def prompt(i: int) -> list[Message]:
        return [Message("user", [Image(_lora_image(i), max_pixels=pixels), Text("Invoice to JSON.")])]

    config = FinetuneConfig(rank=16, alpha=32, learning_rate=3e-3, epochs=100, batch_size=2)
    result = finetune(family_model, [Example(prompt(i), targets[i]) for i in range(8)], tmp_path / "a", config=config)
    assert result.losses[-1] < 0.01 * result.losses[0]
    path = str(result.adapter_path)
    tuned = family_vllm.generate([ChatRequest(prompt(i), SamplingOptions(max_tokens=40), lora=path) for i in range(8)])
    base = family_vllm.generate([ChatRequest(prompt(i), SamplingOptions(max_tokens=40)) for i in range(8)])
    assert sum(r.text == t for r, t in zip(tuned, targets, strict=True)) >= 7, [r.text for r in tuned]
    assert sum(r.text == t for r, t in zip(base, targets, strict=True)) == 0


def test_html_layout_format_through_the_engine(family: str, family_vllm: Any, tmp_path: Path) -> None:
    """ "QwenVL HTML" mode on the real engine: free-text answers (a random model writes no boxes), so every page
    ends failed with its reason, never silently empty; the requests carry no schema."""
    from qwenvl.layout import DocumentParser
    from qwenvl_testkit.synthetic_pages import make_pages, write_pdf

    pdf = write_pdf([p.image for p in make_pages(1, seed=9)], tmp_path / "scan.pdf")
    parser = DocumentParser(
        engine=family_vllm,
        backend="vlm",
        layout_format="html",
        max_pixels=64 * PROFILES[family].factor ** 2,
        max_tokens=48,
        max_tile_depth=0,
        fallback=False,
    )
    [doc] = parser.parse_many([pdf])
    [page] = doc.pages
    assert page.status == "failed" and page.error and not page.blocks
    assert "no blocks" in page.error or "cut off" in page.error
    assert family_vllm.unfinished_requests() == 0


def test_olmocr_requests_are_the_same_in_process_and_over_http(
    family: str, family_vllm: Any, family_server: Any, tmp_path: Path
) -> None:
    """olmOCR-2's request (its prompt before the page, the page at 1288 px on its longest side, temperature 0.1)
    costs the same prompt tokens in-process and over HTTP, and runs on both; through DocumentParser a random
    model's answer (no front matter) ends the page in OCR's fallback with the reason, on both engines. olmOCR-2
    is a Qwen2.5-VL: the page's way through the parser (a random answer of some 2000 tokens per engine) is run
    on that family; the request is checked on every family, for a fine-tune trained on olmOCR's format."""
    from qwenvl.layout import DocumentParser
    from qwenvl.layout.olmocr import LONGEST_SIDE, olmocr_request, sized_for_olmocr
    from qwenvl_testkit.synthetic_pages import make_page, write_pdf

    page = make_page("article", seed=4)
    image = sized_for_olmocr(page.image)
    assert max(image.size) == LONGEST_SIDE
    request = olmocr_request(image, max_tokens=8)
    local, remote = family_vllm.count_tokens(request), family_server.count_tokens(request)
    assert local == remote and local.image_tokens > 1000  # the page at olmOCR's size, not the 1280-token default
    [a] = family_vllm.generate([request])
    [b] = family_server.generate([request])
    assert a.ok and b.ok, (a.error, b.error)
    assert a.usage.prompt_tokens == b.usage.prompt_tokens == local.prompt_tokens
    if family != "qwen2_5_vl":
        return
    pdf = write_pdf([page.image], tmp_path / "page.pdf")
    for engine in (family_vllm, family_server):
        [doc] = DocumentParser(engine=engine, backend="vlm", layout_format="olmocr").parse_many([pdf])
        [result] = doc.pages
        assert result.status == "fallback" and "olmOCR answer" in (result.error or ""), result.error
        assert result.usage.requests == 1 and result.usage.image_tokens == local.image_tokens
