"""The table finder (camelot) runs in a worker of its own, under a deadline and the PDF memory limit: a page it
cannot finish keeps its whole text layer (its tables found by the layout's rules), and the next page gets the
finder again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fpdf import FPDF

from qwenvl.layout import BlockType, DocumentParser, ParserOptions, RunOptions, TextLayerOptions
from qwenvl.layout.text_layer import MAX_TABLE_CHARS
from tests.reliability import hostile_pdfs as H

pytestmark = pytest.mark.timeout(180)


def _table_page(path: Path) -> Path:
    """A borderless table that only the finder reads as one (four columns of numbers, a header row)."""
    pdf = FPDF(unit="pt", format="letter")
    pdf.add_page()
    pdf.set_font("Helvetica", size=11)
    rows = [
        ["Region", "2019", "2020", "2021"],
        ["North", "1,234", "2,345", "3,456"],
        ["South", "987", "1,102", "1,310"],
        ["East", "4,567", "4,890", "5,012"],
        ["West", "2,001", "2,760", "3,905"],
    ]
    for k, row in enumerate(rows):
        pdf.text(72, 200 + 24 * k, row[0])
        for right, cell in zip((300.0, 390.0, 480.0), row[1:], strict=True):
            pdf.text(right - pdf.get_string_width(cell), 200 + 24 * k, cell)
    pdf.output(str(path))
    return path


def test_a_page_the_finder_cannot_finish_keeps_its_text(tmp_path: Path) -> None:
    """With a 1 s table deadline, a page of 875 separate number cells (camelot needs seconds) is read from its
    text layer with every number, in well under the page deadline; the table page after it gets its table."""
    dense = tmp_path / "dense.pdf"
    dense.write_bytes(H.dense_table(35, 25))
    table = _table_page(tmp_path / "table.pdf")
    options = ParserOptions(text_layer=TextLayerOptions(table_timeout=1.0), run=RunOptions(progress=False))
    parser = DocumentParser(options=options)
    start = time.monotonic()
    page = parser.parse(dense).pages[0]
    assert time.monotonic() - start < 30
    assert (page.backend, page.status) == ("pdf_text", "ok")
    assert {f"{r * 100 + c:09d}" for r in range(35) for c in range(25)} <= set(page.text.split())
    after = parser.parse(table).pages[0]
    assert [b.type for b in after.blocks] == [BlockType.TABLE]


def test_a_page_past_the_character_limit_is_not_given_to_the_finder(tmp_path: Path) -> None:
    """A page of 27,000 characters in 3,000 cells (camelot: 70 s and 1.9 GB) is read in seconds, text whole."""
    dense = tmp_path / "dense.pdf"
    dense.write_bytes(H.dense_table(120, 25))
    assert 120 * 25 * 9 > MAX_TABLE_CHARS
    start = time.monotonic()
    page = DocumentParser(backend="auto", progress=False).parse(dense).pages[0]
    assert time.monotonic() - start < 20
    assert (page.backend, page.status) == ("pdf_text", "ok")
    assert len("".join(page.text.split())) == 120 * 25 * 9
