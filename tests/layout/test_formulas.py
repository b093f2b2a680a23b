"""Formulas on a text layer: a display formula between paragraphs is a formula block of its own, never merged
into a paragraph, with the text layer's symbols (LaTeX needs a model: the VLM path asks for it); Markdown sets
it apart as display math."""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF

from qwenvl.layout import BlockType, DocumentParser
from qwenvl.layout.export import to_markdown
from qwenvl.layout.vlm import _PROMPT

ABOVE = "The area of the square follows from its side, and the side from the equation below when it is solved."
BELOW = "Solving it gives the side of the square, and so its area, which the next section uses."


def test_display_formula_is_a_formula_block(tmp_path: Path) -> None:
    """A centred line "a 2 + 8 = 12" between two paragraphs is a formula block, in order, and its own $$ block."""
    pdf = FPDF(unit="pt", format="letter")
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    pdf.set_xy(72, 100)
    pdf.multi_cell(468, 14, ABOVE)
    pdf.set_font("Helvetica", size=12)
    pdf.text(270, 160, "a")
    pdf.set_font("Helvetica", size=8)
    pdf.text(277, 156.5, "2")  # raised 3.5 pt, as TeX sets a superscript
    pdf.set_font("Helvetica", size=12)
    pdf.text(284, 160, "+ 8 = 12")
    pdf.set_font("Helvetica", size=11)
    pdf.set_xy(72, 180)
    pdf.multi_cell(468, 14, BELOW)
    path = tmp_path / "formula.pdf"
    pdf.output(str(path))
    doc = DocumentParser(backend="auto", progress=False).parse(path)
    blocks = [(b.type, b.text) for b in doc.pages[0].blocks]
    assert blocks == [
        (BlockType.PARAGRAPH, ABOVE),
        (BlockType.FORMULA, "a 2 + 8 = 12"),
        (BlockType.PARAGRAPH, BELOW),
    ], blocks
    assert "$$\na 2 + 8 = 12\n$$" in to_markdown(doc, page_breaks=False)


def test_sentences_with_symbols_stay_paragraphs(tmp_path: Path) -> None:
    """Text that holds a symbol but reads as words ("The value x = 5 is used here", "2019 - 2020") is no formula."""
    pdf = FPDF(unit="pt", format="letter")
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    for k, line in enumerate(["The value x = 5 is used here.", "2019 - 2020", "Total 30.30 paid by card"]):
        pdf.text(72, 100 + 60 * k, line)
    path = tmp_path / "words.pdf"
    pdf.output(str(path))
    types = {b.text: b.type for b in DocumentParser(backend="auto", progress=False).parse(path).pages[0].blocks}
    assert BlockType.FORMULA not in types.values(), types


def test_vlm_prompt_asks_for_latex() -> None:
    """The VLM is asked for a formula's text as LaTeX, inline math between $ signs."""
    assert "formula block's text as LaTeX" in _PROMPT and "between $ signs" in _PROMPT
