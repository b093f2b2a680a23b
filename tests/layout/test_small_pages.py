"""Small pages (receipts, tickets, labels) read as well as letter pages: a good text layer is kept whatever the
page's size, and a scanned small page is read by OCR at the resolution its size needs."""

from __future__ import annotations

import difflib
import io
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

from qwenvl.layout import DocumentParser
from qwenvl.layout.pages import open_document

pytestmark = pytest.mark.timeout(120)

RECEIPT = [
    "RECEIPT 0042  3 May 2024",
    "Coffee beans 2 x 12.50",
    "Filter papers 1 x 3.20",
    "Oat milk 1 x 2.10",
    "Total 30.30 paid by card",
    "Returns within 30 days",
    "Thank you for shopping",
]
#: the receipt's size in points: about a tenth of a letter page
SIZE = (180, 300)


def _similarity(truth: str, got: str) -> float:
    return difflib.SequenceMatcher(None, " ".join(truth.split()), " ".join(got.split()), autojunk=False).ratio()


def _scanned_receipt(path: Path, text_pt: float) -> None:
    """A 180 x 300 pt page holding only a 600 dpi scan of the receipt, its text ``text_pt`` points high."""
    dpi = 600
    image = Image.new("L", (SIZE[0] * dpi // 72, SIZE[1] * dpi // 72), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=round(text_pt * dpi / 72))
    for k, line in enumerate(RECEIPT):
        draw.text((12 * dpi / 72, (20 + 11 * k) * dpi / 72), line, fill=0, font=font)
    png = io.BytesIO()
    image.save(png, "PNG")
    pdf = FPDF(unit="pt", format=SIZE)
    pdf.add_page()
    pdf.image(io.BytesIO(png.getvalue()), 0, 0, SIZE[0], SIZE[1])
    pdf.output(str(path))


def test_small_page_keeps_its_text_layer(tmp_path: Path) -> None:
    """A 180 x 300 pt page with a born-digital text layer is read from that layer, word for word."""
    pdf = FPDF(unit="pt", format=SIZE)
    pdf.add_page()
    pdf.set_font("Helvetica", size=7)
    for k, line in enumerate(RECEIPT):
        pdf.text(12, 28 + 11 * k, line)
    path = tmp_path / "receipt.pdf"
    pdf.output(str(path))
    page = DocumentParser(backend="auto", progress=False).parse(path).pages[0]
    assert page.backend == "pdf_text" and page.text_layer_rejected is None
    assert _similarity(" ".join(RECEIPT), " ".join(b.text for b in page.blocks)) > 0.97


def test_small_scanned_page_is_read_at_the_resolution_it_needs(tmp_path: Path) -> None:
    """A scanned receipt of 4 pt text is rendered with the pixels a letter page gets (twice the dpi) and OCR
    reads it nearly exactly; at the letter page's 200 dpi it read 0.90 of it ("1x2.10", lost letters)."""
    path = tmp_path / "scan.pdf"
    _scanned_receipt(path, text_pt=4.0)
    with open_document(path) as document:
        source = next(iter(document.pages()))
        assert source.ocr_dpi(200.0) == pytest.approx(400.0)
    page = DocumentParser(backend="auto", progress=False).parse(path).pages[0]
    assert page.backend == "ocr" and page.status == "ok"
    assert page.width == pytest.approx(SIZE[0] * 400 / 72, abs=1)
    assert _similarity(" ".join(RECEIPT), " ".join(b.text for b in page.blocks)) > 0.95


@pytest.mark.parametrize(
    ("size", "dpi"), [((612, 792), 200.0), ((384, 471), 200.0), ((718, 300), 200.0), ((250, 380), 400.0)]
)
def test_only_small_pages_get_more_pixels(tmp_path: Path, size: tuple[int, int], dpi: float) -> None:
    """Pages whose longer side is half a letter page's or more (a letter page, a small book's page, a wide chart)
    are read at the dpi asked; a ticket-sized page at twice it."""
    pdf = FPDF(unit="pt", format=size)
    pdf.add_page()
    path = tmp_path / "page.pdf"
    pdf.output(str(path))
    with open_document(path) as document:
        assert next(iter(document.pages())).ocr_dpi(200.0) == pytest.approx(dpi)
