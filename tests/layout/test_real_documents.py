"""Real PDFs from other projects (tests/data/real/README.md): text layers that lie are not used."""

from __future__ import annotations

from pathlib import Path

from qwenvl.layout import DocumentParser

REAL = Path(__file__).resolve().parents[1] / "data" / "real"


def test_type3_font_without_unicode_map_is_read_from_the_image() -> None:
    [page] = DocumentParser().parse(REAL / "type3_font_nomapping.pdf").pages
    assert page.backend == "ocr" and page.status == "ok"
    assert page.text_layer_rejected is not None and "not text" in page.text_layer_rejected
    assert page.text == "ua"  # what the page shows (its layer reads '\x19\x12')


def test_symbolic_truetype_font_without_unicode_map_is_read_from_the_image() -> None:
    [page] = DocumentParser().parse(REAL / "truetype_font_nomapping.pdf").pages
    assert page.backend == "ocr" and page.status == "ok"
    assert page.text_layer_rejected is not None and "symbolic fonts" in page.text_layer_rejected
    assert "Phone" in page.text and '"7+%-' not in page.text  # the layer's reading of it never passes
