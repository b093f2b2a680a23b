"""Pages OCR cannot read (handwriting, scribbles, damage) say so: status "fallback" with the reason and the
blocks' low confidence, never an ok page of confident-looking garbage. Typed scans stay ok."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw

from qwenvl.layout import DocumentParser, OCROptions, ParserOptions, RunOptions

pytestmark = pytest.mark.timeout(120)

DPI = 200


def _scanned_pdf(path: Path, image: Image.Image) -> None:
    png = io.BytesIO()
    image.save(png, "PNG")
    pdf = FPDF(unit="pt", format="letter")
    pdf.add_page()
    pdf.image(io.BytesIO(png.getvalue()), 0, 0, 612, 792)
    pdf.output(str(path))


def _scribbles() -> Image.Image:
    """A letter page of cursive-like strokes in lines: ink where text would be, but no letters."""
    rng = random.Random(7)
    image = Image.new("L", (612 * DPI // 72, 792 * DPI // 72), 255)
    draw = ImageDraw.Draw(image)
    for row in range(18):
        y, x = 150 + row * 110, 150
        while x < image.width - 200:
            points = [(x, y)]
            for _ in range(rng.randint(6, 14)):
                x += rng.randint(8, 22)
                points.append((x, y + rng.randint(-35, 25)))
            draw.line(points, fill=0, width=4, joint="curve")
            x += rng.randint(30, 60)
    return image


def _typed() -> Image.Image:
    from PIL import ImageFont

    image = Image.new("L", (612 * DPI // 72, 792 * DPI // 72), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=round(11 * DPI / 72))
    for k in range(12):
        line = f"Line {k + 1} of a typed letter about the quarterly accounts"
        draw.text((150, 200 + k * 60), line, fill=0, font=font)
    return image


def _parser(**ocr: float) -> DocumentParser:
    return DocumentParser(options=ParserOptions(ocr=OCROptions(**ocr), run=RunOptions(progress=False)))


def test_scribbles_are_a_fallback_page_that_says_why(tmp_path: Path) -> None:
    """OCR of scribbles gives text at low confidence: the page is "fallback" with the mean confidence named, and
    its blocks keep their confidence below the threshold."""
    path = tmp_path / "scribbles.pdf"
    _scanned_pdf(path, _scribbles())
    page = _parser().parse(path).pages[0]
    assert page.backend == "ocr"
    assert page.status == "fallback"
    assert page.error is not None and "low confidence" in page.error and "below 0.6" in page.error
    assert page.blocks and all(b.confidence is not None and b.confidence < 0.6 for b in page.blocks)


def test_typed_scan_stays_ok(tmp_path: Path) -> None:
    """A typed scan reads at high confidence: status ok, no reason."""
    path = tmp_path / "typed.pdf"
    _scanned_pdf(path, _typed())
    page = _parser().parse(path).pages[0]
    assert (page.backend, page.status, page.error) == ("ocr", "ok", None)
    assert "quarterly accounts" in page.text


def test_threshold_is_an_option(tmp_path: Path) -> None:
    """min_confidence=0 accepts any reading: the same scribbles page is then ok."""
    path = tmp_path / "scribbles.pdf"
    _scanned_pdf(path, _scribbles())
    assert _parser(min_confidence=0.0).parse(path).pages[0].status == "ok"
