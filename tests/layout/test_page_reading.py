"""Reading born-digital pages from their text layer, end to end through `DocumentParser`, each on a PDF made for
it: tables without ruling lines (camelot's stream parser, cells filled from the page's words), prose in two
columns that is not a table, page furniture known by its shape (a running head carrying a page number, a lone
page number, text turned in a side margin), right-to-left lines and cells, and a page turned by /Rotate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pytest
from fpdf import FPDF

from qwenvl.layout import BlockType, DocumentParser
from qwenvl.layout.export import html_table_rows, to_markdown
from qwenvl.layout.model import Block, Page, ParsedDocument
from qwenvl_testkit.synthetic_pages import find_font

#: US letter in points
WIDTH, HEIGHT = 612.0, 792.0
FURNITURE = {BlockType.PAGE_HEADER, BlockType.PAGE_FOOTER, BlockType.PAGE_NUMBER}

INTRO = (
    "The regional offices reported their sales to the central office at the end of each year, and the figures "
    "below are the totals in thousands of units for the three years named. Each office counts an order in the "
    "year it ships, not in the year it is placed."
)
OUTRO = (
    "Sales grew in every region over the period, most of all in the west, where two new warehouses opened in "
    "the spring of the second year and took orders from the coast."
)
SALES = [
    ["Region", "2019", "2020", "2021"],
    ["North", "1,234", "2,345", "3,456"],
    ["South", "987", "1,102", "1,310"],
    ["East", "4,567", "4,890", "5,012"],
    ["West", "2,001", "2,760", "3,905"],
    ["Central", "812", "903", "1,004"],
]
#: two paragraphs of body text
BODY = [
    "The committee met in the spring to review the budget and agreed that the new library would open in the "
    "autumn, after the roof repairs were finished and the shelves were moved back into the reading rooms on the "
    "ground floor. The light there is best for readers who come in the morning before work.",
    "A second meeting in the summer heard the architect, who said that the old windows could be kept if their "
    "frames were mended, and the members voted to keep them. The cost of the work was shared between the town "
    "and the county, and a small grant from the state paid for new lamps in the hall.",
]
PROSE = " ".join(BODY)


def _pdf() -> FPDF:
    pdf = FPDF(unit="pt", format="letter")
    pdf.set_auto_page_break(False)
    pdf.add_page()
    pdf.set_font("Helvetica", "", 11)
    return pdf


def _wrap(pdf: FPDF, text: str, width: float) -> list[str]:
    """``text`` broken into lines no wider than ``width`` points in the current font."""
    lines: list[str] = []
    line: list[str] = []
    for word in text.split():
        if line and pdf.get_string_width(" ".join([*line, word])) > width:
            lines.append(" ".join(line))
            line = []
        line.append(word)
    return [*lines, " ".join(line)] if line else lines


def _write(pdf: FPDF, lines: list[str], *, x: float, y: float, lead: float = 15.0) -> float:
    """Sets ``lines`` from baseline ``y`` down; returns the baseline after the last."""
    for line in lines:
        pdf.text(x, y, line)
        y += lead
    return y


def _parse(path: Path) -> ParsedDocument:
    return DocumentParser(backend="auto", progress=False).parse(path)


def _kinds(page: Page) -> list[tuple[str, str]]:
    return [(b.type.value, b.text) for b in page.blocks]


def _block(page: Page, text: str) -> Block:
    [block] = [b for b in page.blocks if text in b.text]
    return block


def _words(text: str) -> list[str]:
    return text.replace("\t", " ").split()


# ---- tables without ruling lines ---------------------------------------------------------------------------------


def _sales_page(path: Path, *, row_lead: float, gap: float) -> Path:
    """A heading, a paragraph, the sales table set without any line (the region flush left, the numbers flush
    right in columns 90 points apart), ``gap`` points above and below it, and another paragraph."""
    pdf = _pdf()
    pdf.set_font("Helvetica", "B", 16)
    pdf.text(72, 80, "Annual Sales by Region")
    pdf.set_font("Helvetica", "", 11)
    y = _write(pdf, _wrap(pdf, INTRO, 468), x=72, y=112) - 15 + gap
    rights = [300.0, 390.0, 480.0]
    for k, row in enumerate(SALES):
        pdf.set_font("Helvetica", "B" if k == 0 else "", 11)
        pdf.text(72, y, row[0])
        for right, cell in zip(rights, row[1:], strict=True):
            pdf.text(right - pdf.get_string_width(cell), y, cell)
        y += row_lead
    pdf.set_font("Helvetica", "", 11)
    _write(pdf, _wrap(pdf, OUTRO, 468), x=72, y=y - row_lead + gap)
    pdf.output(str(path))
    return path


@pytest.mark.parametrize(
    ("row_lead", "gap"),
    [pytest.param(18.0, 26.0, id="rows-close-to-prose"), pytest.param(24.0, 70.0, id="rows-spread-apart")],
)
def test_a_table_without_ruling_lines_is_one_table_of_its_cells(tmp_path: Path, row_lead: float, gap: float) -> None:
    """A borderless table between paragraphs is one table whose rows are its cells, the prose and heading kept out."""
    doc = _parse(_sales_page(tmp_path / "sales.pdf", row_lead=row_lead, gap=gap))
    [page] = doc.pages
    assert page.backend == "pdf_text"
    tables = [b for b in page.blocks if b.type is BlockType.TABLE]
    assert len(tables) == 1, _kinds(page)
    assert tables[0].html is not None
    rows = html_table_rows(tables[0].html)
    assert rows == SALES, rows
    # the prose and the heading stay text, outside the table
    assert "regional offices" not in tables[0].text and "warehouses" not in tables[0].text, tables[0].text
    paragraphs = " ".join(b.text for b in page.blocks if b.type is BlockType.PARAGRAPH)
    assert _words(INTRO) == _words(paragraphs)[: len(_words(INTRO))], _kinds(page)
    assert _words(OUTRO) == _words(paragraphs)[-len(_words(OUTRO)) :], _kinds(page)
    assert _block(page, "Annual Sales by Region").type in {BlockType.TITLE, BlockType.SECTION_HEADER}


def test_prose_in_two_columns_is_not_a_table(tmp_path: Path) -> None:
    """Two columns of running text on the same baselines make no table block, and all their words are read."""
    pdf = _pdf()
    lines = _wrap(pdf, f"{PROSE} {INTRO} {OUTRO} {PROSE}", 222)
    assert len(lines) >= 30  # the premise: each column 15 lines of sentences
    left, right = lines[:15], lines[15:30]
    # set baseline by baseline, left then right, as producers that write a page line by line do: the text layer
    # then holds lines with a wide gap in them (cells side by side), so the table finder is asked, and camelot's
    # stream parser reads the page as a 15 x 2 table
    for k, (left_line, right_line) in enumerate(zip(left, right, strict=True)):
        pdf.text(72, 96 + 14 * k, left_line)
        pdf.text(318, 96 + 14 * k, right_line)
    pdf.output(str(tmp_path / "columns.pdf"))
    [page] = _parse(tmp_path / "columns.pdf").pages
    assert page.backend == "pdf_text"
    assert not [b for b in page.blocks if b.type is BlockType.TABLE], _kinds(page)
    assert sorted(_words(page.text)) == sorted(_words(" ".join(left + right)))


# ---- page furniture by its shape ----------------------------------------------------------------------------------


def _body(pdf: FPDF, *, top: float) -> float:
    """Two paragraphs of body text (11 pt) from baseline ``top``; returns the last baseline."""
    y = _write(pdf, _wrap(pdf, BODY[0], 468), x=72, y=top, lead=14)
    return _write(pdf, _wrap(pdf, BODY[1], 468), x=72, y=y + 10, lead=14) - 14


def _assert_body_in_markdown(doc: ParsedDocument) -> str:
    markdown = to_markdown(doc, page_breaks=False)
    assert " ".join(_words(PROSE)) in " ".join(_words(markdown)), markdown
    return markdown


def test_a_running_head_with_a_page_number_is_a_page_header(tmp_path: Path) -> None:
    """A short first line ending in a page number, below the page's top 6%, is a page header left out of Markdown."""
    pdf = _pdf()
    top = 0.10 * HEIGHT  # lower than the top 6% that marks a header by position alone
    pdf.text(72, top, "Optimized Table Tokenization 9")
    _body(pdf, top=top + 34)
    pdf.output(str(tmp_path / "head.pdf"))
    doc = _parse(tmp_path / "head.pdf")
    [page] = doc.pages
    assert page.backend == "pdf_text"
    head = _block(page, "Optimized Table Tokenization")
    assert head.type is BlockType.PAGE_HEADER and head.text == "Optimized Table Tokenization 9", _kinds(page)
    assert head.bbox.y0 > 0.06 * page.height  # the premise: not in the band where position alone decides
    assert "Tokenization" not in _assert_body_in_markdown(doc)


def test_a_lone_page_number_as_the_last_line_is_a_page_number(tmp_path: Path) -> None:
    """ "Page 7" alone as the page's last line, at 91% of its height, is a page number left out of Markdown."""
    pdf = _pdf()
    last = _body(pdf, top=96)
    assert last < 0.8 * HEIGHT  # the premise: the number stands apart, below the body
    pdf.text(280, 0.91 * HEIGHT, "Page 7")
    pdf.output(str(tmp_path / "number.pdf"))
    doc = _parse(tmp_path / "number.pdf")
    [page] = doc.pages
    number = _block(page, "Page 7")
    assert number.type is BlockType.PAGE_NUMBER and number.text == "Page 7", _kinds(page)
    assert number.bbox.y1 < 0.94 * page.height  # the premise: above the band where position alone decides
    assert "Page 7" not in _assert_body_in_markdown(doc)


def test_turned_text_in_the_side_margin_is_furniture(tmp_path: Path) -> None:
    """A line turned 90 degrees in the right margin is a page header or footer, left out of Markdown; the body stays."""
    pdf = _pdf()
    _body(pdf, top=96)
    x, y = 0.95 * WIDTH, 600.0
    with pdf.rotation(90, x, y):
        pdf.text(x, y, "Downloaded from example.org on 1 May 2024")
    pdf.output(str(tmp_path / "stamp.pdf"))
    doc = _parse(tmp_path / "stamp.pdf")
    [page] = doc.pages
    stamp = _block(page, "example.org")
    assert stamp.text == "Downloaded from example.org on 1 May 2024", _kinds(page)
    assert stamp.bbox.x0 > 0.92 * page.width and stamp.bbox.height > 5 * stamp.bbox.width  # turned, in the margin
    assert stamp.type in {BlockType.PAGE_HEADER, BlockType.PAGE_FOOTER}, _kinds(page)
    assert "example.org" not in _assert_body_in_markdown(doc)


# ---- right to left -------------------------------------------------------------------------------------------------

#: "Peace to all the friends in the big city", in logical order (the first word is read first, at the right)
HEBREW = ["שלום", "לכל", "החברים", "בעיר", "הגדולה"]
#: a price list: (product name, price in words), each a phrase of two or three words
HEBREW_ROWS = [["שם המוצר", "מחיר ליחידה"], ["כיסא עץ גדול", "מאה עשרים שקלים"], ["שולחן אוכל עגול", "ארבע מאות שקלים"]]


def _visual(phrase: str) -> str:
    """A Hebrew phrase as it is drawn left to right: its words in reverse, each word's letters reversed (Hebrew
    needs no shaping, so fpdf2 sets these glyphs as they are given)."""
    return " ".join(word[::-1] for word in reversed(phrase.split()))


def _hebrew_pdf() -> FPDF:
    pdf = FPDF(unit="pt", format="letter")
    pdf.set_auto_page_break(False)
    pdf.add_font("sans", "", find_font("sans"))  # DejaVu Sans has the Hebrew letters
    pdf.add_page()
    pdf.set_font("sans", "", 14)
    return pdf


def test_a_right_to_left_line_reads_in_logical_order(tmp_path: Path) -> None:
    """A Hebrew line, one word per text object set right to left, reads first word first."""
    pdf = _hebrew_pdf()
    pdf.text(72, 90, "The line below is written in Hebrew.")
    right = 460.0
    for word in HEBREW:  # logical order, each word left of the one before
        x = right - pdf.get_string_width(word)
        pdf.text(x, 130, word[::-1])
        right = x - pdf.get_string_width(" ")
    pdf.output(str(tmp_path / "hebrew.pdf"))
    [page] = _parse(tmp_path / "hebrew.pdf").pages
    assert page.backend == "pdf_text"
    line = _block(page, HEBREW[2])
    assert line.text == " ".join(HEBREW), _kinds(page)


def test_right_to_left_table_cells_keep_their_columns_and_read_right_to_left(tmp_path: Path) -> None:
    """A ruled Hebrew table keeps its two columns, and each cell's words read right to left (first word first)."""
    pdf = _hebrew_pdf()
    pdf.set_font("sans", "", 12)
    pdf.text(72, 80, "Prices of the shop's furniture, in Hebrew:")
    top, height, cols = 120.0, 26.0, [72.0, 300.0, 528.0]
    for k in range(len(HEBREW_ROWS) + 1):
        pdf.line(cols[0], top + k * height, cols[-1], top + k * height)
    for x in cols:
        pdf.line(x, top, x, top + len(HEBREW_ROWS) * height)
    for k, (name, price) in enumerate(HEBREW_ROWS):
        # the first column is the right one; each cell set flush right
        for edge, cell in ((cols[2], name), (cols[1], price)):
            drawn = _visual(cell)
            pdf.text(edge - 8 - pdf.get_string_width(drawn), top + k * height + 18, drawn)
    pdf.output(str(tmp_path / "prices.pdf"))
    [page] = _parse(tmp_path / "prices.pdf").pages
    [table] = [b for b in page.blocks if b.type is BlockType.TABLE]
    assert table.html is not None
    rows = html_table_rows(table.html)
    # columns stay in page order (left to right): the price, then the name
    assert rows == [[price, name] for name, price in HEBREW_ROWS], rows


# ---- turned pages ------------------------------------------------------------------------------------------------


def test_a_page_turned_by_rotate_keeps_its_text_layer(tmp_path: Path) -> None:
    """A portrait page turned by /Rotate 90 is read from its text layer, its blocks on the turned page's ink."""
    pdf = _pdf()
    lines = _wrap(pdf, PROSE, 468)
    _write(pdf, lines, x=72, y=100, lead=14)
    pdf.text(72, 700, "Turned pages keep their words")
    pdf.output(str(tmp_path / "portrait.pdf"))
    with pdfium.PdfDocument(tmp_path / "portrait.pdf") as src:
        src[0].set_rotation(90)
        src.save(tmp_path / "turned.pdf")
    [page] = _parse(tmp_path / "turned.pdf").pages
    assert page.backend == "pdf_text", page.text_layer_rejected
    assert page.width > page.height
    # the turned page shows the lines running down, read right to left: compare the words, not their order
    assert sorted(_words(page.text)) == sorted(_words(" ".join([*lines, "Turned pages keep their words"])))
    assert "The committee met in the spring" in page.text, _kinds(page)
    with pdfium.PdfDocument(tmp_path / "turned.pdf") as shown:  # pdfium renders the page turned
        image = np.asarray(shown[0].render(scale=200 / 72).to_pil().convert("L"))
    assert abs(image.shape[1] - page.width) <= 2 and abs(image.shape[0] - page.height) <= 2
    blocks = [b for b in page.blocks if b.text]
    assert len(blocks) >= 2
    for block in blocks:
        box = block.bbox
        assert 0 <= box.x0 < box.x1 <= page.width and 0 <= box.y0 < box.y1 <= page.height, (block.text, box)
        under = image[int(box.y0) : int(box.y1) + 1, int(box.x0) : int(box.x1) + 1]
        assert (under < 128).mean() > 0.02, (block.text[:40], box)  # the text's ink lies under the block
