"""The "QwenVL HTML" layout format: golden answers parsed into typed blocks, and mapped to page pixels through
the real pipeline with each family's box convention (a stand-in engine answers with the golden HTML)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image as PILImage

from qwenvl import ChatRequest, ChatResult, Usage
from qwenvl.layout import BlockType, DocumentParser
from qwenvl.layout.vlm import parse_qwenvl_html
from qwenvl.models import QWEN2_5_VL, QWEN3_VL, ModelProfile

GOLDEN = """```html
<html><body>
<h1 data-bbox="10 20 300 60">Annual Report</h1>
<p data-bbox="10 80 300 140">Revenue grew by <b>12%</b> in 2025.</p>
<div class="image" data-bbox="10 150 150 250"><img data-bbox="12 152 148 248"/></div>
<table data-bbox="10 260 300 330"><tr><td>Q1</td><td>100</td></tr><tr><td>Q2</td><td>250</td></tr></table>
<div class="formula" data-bbox="10 340 200 360">E = mc^2</div>
<p>no box here</p>
<footer data-bbox="10 380 300 395">Page 1</footer>
<p data-bbox="10 400 300 4"""


def test_golden_html_becomes_typed_blocks() -> None:
    items = parse_qwenvl_html(GOLDEN)
    assert [i["type"] for i in items] == ["title", "paragraph", "figure", "table", "formula", "page_footer"]
    assert items[0]["bbox"] == [10.0, 20.0, 300.0, 60.0]
    assert items[1]["text"] == "Revenue grew by 12% in 2025."
    assert items[3]["text"] == "Q1\t100\nQ2\t250" and items[3]["html"].startswith("<table>")
    assert items[4]["text"] == "E = mc^2"
    # the element without a box and the cut-off last one are left out; nothing raises on broken HTML
    assert parse_qwenvl_html("<p data-bbox='1 2'>x</p><div><p data-bbox='5 5 1 1'>y") == []
    assert parse_qwenvl_html("not html at all") == []


class GoldenEngine:
    """Answers every request with the golden HTML; records the requests."""

    model_name = "golden"
    max_model_len = 4096

    def __init__(self, profile: ModelProfile) -> None:
        self.profile = profile
        self.requests: list[ChatRequest] = []

    def generate(self, requests: list[ChatRequest]) -> list[ChatResult]:
        self.requests.extend(requests)
        return [ChatResult(text=GOLDEN, finish_reason="stop", usage=Usage(1, 1, 0, 1)) for _ in requests]

    async def agenerate(self, requests: list[ChatRequest]) -> Any:  # pragma: no cover - unused
        return self.generate(requests)


def _parse(profile: ModelProfile, page: Path) -> tuple[Any, GoldenEngine]:
    engine = GoldenEngine(profile)
    parser = DocumentParser(engine=engine, backend="vlm", layout_format="html", max_pixels=256 * 28 * 28)  # type: ignore[arg-type]
    [doc] = parser.parse_many([page])
    return doc, engine


def test_html_mode_maps_each_family_convention_to_page_pixels(tmp_path: Path) -> None:
    page = tmp_path / "page.png"
    PILImage.new("RGB", (800, 1000), "white").save(page)
    doc, engine = _parse(QWEN2_5_VL, page)
    request = engine.requests[0]
    assert request.response_format is None and request.messages[0].role == "system"
    assert request.messages[-1].text == "QwenVL HTML"
    [p] = doc.pages
    assert p.status == "ok" and [b.type for b in p.blocks][:2] == [BlockType.TITLE, BlockType.PARAGRAPH]
    # Qwen2.5-VL: pixels of the image it saw (800x1000 under 256 tokens of 28 px -> 392x476)
    assert QWEN2_5_VL.smart_resize(1000, 800, None, 256 * 28 * 28) == (476, 392)
    title = p.blocks[0].bbox
    assert (round(title.x0, 1), round(title.y1, 1)) == (round(10 * 800 / 392, 1), round(60 * 1000 / 476, 1))
    table = next(b for b in p.blocks if b.type is BlockType.TABLE)
    assert table.html and "<td>Q2</td>" in table.html
    # Qwen3-VL: the same answer read on a 0-1000 grid
    doc3, _ = _parse(QWEN3_VL, page)
    title3 = doc3.pages[0].blocks[0].bbox
    assert (title3.x0, title3.y0, title3.x1, title3.y1) == (8.0, 20.0, 240.0, 60.0)
