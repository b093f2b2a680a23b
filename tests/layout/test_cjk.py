"""Chinese pages through RapidOCR and the layout analysis, drawn in a real CJK font (Noto Sans CJK, installed from
the package index by the dev extra): character error rate, reading order and tables, measured."""

from __future__ import annotations

import re

import pytest
from rapidfuzz.distance import Levenshtein

from qwenvl.layout import BBox, BlockType
from qwenvl.layout.ocr import RapidOCREngine, ocr_layout
from qwenvl_testkit.synthetic_pages import ZH_PAGE_KINDS, SyntheticPage, make_chinese_page


def cer_cjk(got: str, want: str) -> float:
    """Character error rate without whitespace (Chinese has none between words; OCR's spacing of mixed Latin
    text is not an error)."""
    got, want = "".join(got.split()), "".join(want.split())
    return Levenshtein.distance(got, want) / max(1, len(want))


@pytest.fixture(scope="module")
def rapidocr() -> RapidOCREngine:
    return RapidOCREngine()


@pytest.fixture(scope="module")
def pages() -> dict[str, SyntheticPage]:
    return {kind: make_chinese_page(kind, seed=7) for kind in ZH_PAGE_KINDS}


@pytest.mark.parametrize("kind", ZH_PAGE_KINDS)
def test_chinese_pages_read_in_order_with_cer_under_2_percent(
    rapidocr: RapidOCREngine, pages: dict[str, SyntheticPage], kind: str
) -> None:
    page = pages[kind]
    blocks = ocr_layout(page.image, rapidocr, page_number=1)
    text = "\n\n".join(b.text for b in blocks)
    assert cer_cjk(text, page.text) <= 0.02, (cer_cjk(text, page.text), text, page.text)
    # every truth block is found (its best match overlaps it) and they come in the truth's order
    found = []
    for truth in sorted(page.blocks, key=lambda b: b.order):
        box = BBox.of(*truth.bbox)
        best = max(blocks, key=lambda b: b.bbox.iou(box))
        assert best.bbox.iou(box) >= 0.5, (truth.text, best.text, best.bbox.iou(box))
        found.append(best.reading_order)
    assert found == sorted(found), found
    assert blocks[0].type is BlockType.TITLE
    # wrapped Chinese lines join without spaces: no space between two Chinese characters anywhere
    assert not [b.text for b in blocks if re.search("[\u4e00-\u9fff] [\u4e00-\u9fff]", b.text)]


def test_chinese_table_comes_out_as_cells(rapidocr: RapidOCREngine, pages: dict[str, SyntheticPage]) -> None:
    page = pages["table"]
    [truth] = [b for b in page.blocks if b.type == "table"]
    tables = [b for b in ocr_layout(page.image, rapidocr) if b.type is BlockType.TABLE]
    assert len(tables) == 1, [b.type for b in ocr_layout(page.image, rapidocr)]
    rows = [line.split("\t") for line in tables[0].text.split("\n")]
    assert [["".join(c.split()) for c in row] for row in rows] == truth.rows
