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


def test_two_column_scan_reads_in_order_with_its_headings() -> None:
    """linn.pdf: a scanned product sheet; title, intro, bullets across the page, two columns with bold
    headings, then a heading below both columns and more bullets. Phrases hand-checked from the page."""
    [page] = DocumentParser().parse(REAL / "linn.pdf").pages
    text = " ".join(page.text.split())
    phrases = [
        "The LinnSequencer",
        "32 Track MIDI Sequence Recorder",
        "composition and performance tool",
        "Operation is similar to multi-track tape recorder",
        "Optional remote control.",
        "Recording a Sequence",
        "To record a sequence, simply press RECORD and PLAY",
        "sustain pedal, and program changes!",
        "Editing",
        "To erase a wrong note",
        "simply use LOCATE, FAST FORWARD, or REWIND",  # the right column's top
        "Creating a Song",
        "Composition Without Compromise",
        "See your Linn dealer today for a demonstration!",
        "Additional Features",  # below both columns: after the right column, not inside the left one
        "Simple, easy to learn operation",
        "Any TIME SIGNATURE may be used",
        "Linn Electronics, Inc.",
    ]
    positions = [text.find(p) for p in phrases]
    assert -1 not in positions, [p for p, at in zip(phrases, positions, strict=True) if at == -1]
    assert positions == sorted(positions), positions
    headings = {b.text for b in page.blocks if b.type.value == "section_header"}
    # four of the five bold headings; "Recording a Sequence" shares Tesseract's block with its paragraph
    assert {"Editing", "Creating a Song", "Composition Without Compromise", "Additional Features"} <= headings
    assert not any(b.text.startswith(("\u2022", "*")) for b in page.blocks if b.type.value == "section_header")
