"""OCR layout on synthetic scans with known truth: text, reading order, boxes, types, tables."""

from __future__ import annotations

import pytest
from rapidfuzz.distance import Levenshtein

from qwenvl.layout import BBox, BlockType
from qwenvl.layout.export import html_table_rows
from qwenvl.layout.ocr import RapidOCREngine, TesseractEngine, ocr_engine_for, ocr_layout
from qwenvl_testkit.synthetic_pages import SyntheticPage, make_page

CASES = {
    "article": {"kind": "article"},
    "two_column": {"kind": "two_column"},
    "table": {"kind": "table"},
    "list_sans": {"kind": "list", "style": "sans"},
    "rotated_noisy_article": {"kind": "article", "rotate": 1.0, "noise": 0.7},
    "rotated_noisy_two_column": {"kind": "two_column", "rotate": -0.8, "noise": 0.5, "seed": 3},
    "rotated_noisy_table": {"kind": "table", "rotate": 0.7, "noise": 0.6, "seed": 5},
}


def cer(got: str, want: str) -> float:
    """Character error rate with whitespace runs counted as one space."""
    got, want = " ".join(got.split()), " ".join(want.split())
    return Levenshtein.distance(got, want) / max(1, len(want))


@pytest.fixture(scope="module")
def tesseract() -> TesseractEngine:
    return TesseractEngine("eng")


def _match(page: SyntheticPage, blocks: list) -> list[tuple[float, object]]:  # noqa: ANN001
    out = []
    for truth in sorted(page.blocks, key=lambda b: b.order):
        box = BBox.of(*truth.bbox)
        best = max(blocks, key=lambda b: b.bbox.iou(box))
        out.append((best.bbox.iou(box), best))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_tesseract_layout_matches_truth(tesseract: TesseractEngine, case: str) -> None:
    page = make_page(**CASES[case])  # type: ignore[arg-type]
    blocks = ocr_layout(page.image, tesseract, page_number=1)
    text = "\n\n".join(b.text for b in blocks)
    assert cer(text, page.text) <= 0.005, (text, page.text)  # the bar for synthetic pages
    matches = _match(page, blocks)
    # every truth block is found as one block with IoU >= 0.7 of the same type, in the truth's order
    assert min(iou for iou, _ in matches) >= 0.7, [round(iou, 2) for iou, _ in matches]
    assert [b.type.value for _, b in matches] == [t.type for t in sorted(page.blocks, key=lambda b: b.order)]
    orders = [b.reading_order for _, b in matches]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    assert all(b.origin == "ocr" and b.confidence is not None and 0 <= b.confidence <= 1 for b in blocks)
    w, h = page.image.size
    assert all(0 <= b.bbox.x0 <= b.bbox.x1 <= w and 0 <= b.bbox.y0 <= b.bbox.y1 <= h for b in blocks)


def test_two_column_reading_order_is_column_by_column(tesseract: TesseractEngine) -> None:
    page = make_page("two_column", seed=7)
    blocks = ocr_layout(page.image, tesseract)
    paragraphs = [b for b in blocks if b.type is BlockType.PARAGRAPH]
    mid = page.image.width / 2
    sides = ["L" if b.bbox.x1 < mid else "R" for b in paragraphs]
    assert sides == ["L", "L", "L", "R", "R", "R"]
    assert blocks[0].type is BlockType.TITLE


@pytest.mark.parametrize("rotate", [0.0, 0.7])
def test_ruled_table_comes_out_as_cells(tesseract: TesseractEngine, rotate: float) -> None:
    page = make_page("table", seed=2, rotate=rotate, noise=0.5 if rotate else 0.0)
    (truth,) = [b for b in page.blocks if b.type == "table"]
    (table,) = [b for b in ocr_layout(page.image, tesseract) if b.type is BlockType.TABLE]
    rows = html_table_rows(table.html or "")
    assert len(rows) == len(truth.rows) and all(len(r) == len(truth.rows[0]) for r in rows)
    flat_got = " ".join(c for r in rows for c in r)
    flat_want = " ".join(c for r in truth.rows for c in r)
    assert cer(flat_got, flat_want) <= 0.02


def test_engine_choice_by_language() -> None:
    assert isinstance(ocr_engine_for("eng"), TesseractEngine)
    assert isinstance(ocr_engine_for("chi_sim"), RapidOCREngine)  # no tessdata wheel for it here
    with pytest.raises(FileNotFoundError, match="tessdata-xxx"):
        TesseractEngine("xxx")


def test_rapidocr_reads_a_page_into_ordered_blocks() -> None:
    """RapidOCR (the engine for Chinese) on an English page: mechanics, not accuracy (it merges English words)."""
    page = make_page("two_column", seed=1)
    blocks = ocr_layout(page.image, RapidOCREngine())
    assert blocks and blocks[0].type is BlockType.TITLE
    w, h = page.image.size
    assert all(0 <= b.bbox.x0 < b.bbox.x1 <= w and 0 <= b.bbox.y0 < b.bbox.y1 <= h for b in blocks)
    text = "\n\n".join(b.text for b in blocks)
    assert cer(text, page.text) < 0.5  # same text, in the right order, give or take its word merging
    paragraphs = [b for b in blocks if b.type is BlockType.PARAGRAPH]
    sides = ["L" if b.bbox.x1 < w / 2 else "R" for b in paragraphs]
    assert sides == sorted(sides)  # every left-column block before every right-column block


def _turned(box: BBox, turn: int, width: int, height: int) -> BBox:
    """``box`` on a ``width`` x ``height`` page after the page is turned ``turn`` degrees clockwise."""
    if turn == 90:  # (x, y) -> (height - y, x)
        return BBox.of(height - box.y1, box.x0, height - box.y0, box.x1)
    if turn == 180:
        return BBox.of(width - box.x1, height - box.y1, width - box.x0, height - box.y0)
    return BBox.of(box.y0, width - box.x1, box.y1, width - box.x0)  # 270: (x, y) -> (y, width - x)


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_a_page_scanned_turned_reads_upright_with_boxes_on_the_page_as_given(
    tesseract: TesseractEngine, turn: int
) -> None:
    """A two-column page fed in sideways or upside down: the same text in the same order as upright, and each
    block's box where that block lies on the turned image."""
    page = make_page(kind="two_column")
    upright = ocr_layout(page.image, tesseract, page_number=1)
    turned_image = page.image.rotate(-turn, expand=True)
    turned = ocr_layout(turned_image, tesseract, page_number=1)
    assert cer("\n\n".join(b.text for b in turned), page.text) <= 0.02
    assert [b.text for b in turned] == [b.text for b in upright]
    w, h = page.image.size
    for a, b in zip(upright, turned, strict=True):
        assert b.bbox.iou(_turned(a.bbox, turn, w, h)) >= 0.9, (a.text[:30], a.bbox, b.bbox)


def test_tesseract_instances_outlive_threads_and_serve_concurrent_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each read borrows an idle Tesseract instance: three thread pools in a row (as three batches, or three Ray
    tasks in one worker, make) start at most two of each kind, not one per thread; reads running side by side give what
    the same reads give one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    engine = TesseractEngine("eng")
    real = engine._tesserocr.PyTessBaseAPI
    started: list[str] = []

    def counting(*args: object, **kwargs: object) -> object:
        started.append(str(kwargs["lang"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine._tesserocr, "PyTessBaseAPI", counting)
    pages = [make_page(kind=kind, seed=k).image for k, kind in enumerate(["article", "list", "two_column", "table"])]
    alone = [[b.text for b in ocr_layout(image, engine)] for image in pages]
    for _ in range(3):
        with ThreadPoolExecutor(max_workers=2) as pool:
            together = list(pool.map(lambda image: [b.text for b in ocr_layout(image, engine)], pages))
        assert together == alone
    assert 1 <= started.count("eng") <= 2 and started.count("osd") <= 2, started
