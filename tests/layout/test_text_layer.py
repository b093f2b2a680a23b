"""Text layers that lie: each kind on a PDF made for it. A layer that is not text, lies outside the page, or is
invisible over an image that reads otherwise is not used; the page is read from its image and says why. Honest
layers (a born-digital page, a scan's matching OCR layer) are still used."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest
from fpdf import FPDF
from fpdf.enums import TextMode

from qwenvl.layout import DocumentParser, ParserOptions, TextLayerOptions
from qwenvl.layout.export import page_records
from qwenvl.layout.pages import open_document
from qwenvl_testkit.synthetic_pages import _WORDS, find_font
from tests.layout.test_ocr_layout import cer

LINES = [
    "Invoice 4471 for the quarterly maintenance of the pumping station",
    "Payment is due within thirty days of the date written above",
    "Late payments are charged interest at the rate agreed in the contract",
    "Questions about this invoice go to the accounts office in writing",
]


def _pdf(**kwargs: Any) -> FPDF:
    pdf = FPDF(unit="pt", format="letter")
    pdf.set_compression(False)  # the tests edit the file's objects
    pdf.set_auto_page_break(False)
    pdf.add_font("serif", "", find_font("serif"), **kwargs)
    pdf.add_page()
    pdf.set_font("serif", "", 14)
    return pdf


def _write(pdf: FPDF, lines: list[str], *, x: float = 72, y: float = 96) -> None:
    for k, line in enumerate(lines):
        pdf.text(x, y + 24 * k, line)


def _digital(path: Path) -> Path:
    pdf = _pdf()
    _write(pdf, LINES)
    pdf.output(str(path))
    return path


def _without_unicode_map(path: Path) -> Path:
    """The digital page with its font's ToUnicode map taken out: the layer reads as control characters (a
    Type3 or subset font without a map, as old PDF producers write)."""
    data = _digital(path.with_suffix(".src.pdf")).read_bytes()
    assert data.count(b"/ToUnicode") == 1
    path.write_bytes(data.replace(b"/ToUnicode", b"/ToUnicodX"))
    return path


def _off_page(path: Path) -> Path:
    """The lines drawn on the page, and a layer of other text placed outside it (hidden keyword stuffing)."""
    pdf = _pdf()
    _write(pdf, LINES)
    rng = random.Random(3)
    hidden = [" ".join(rng.choice(_WORDS) for _ in range(10)) for _ in range(12)]
    _write(pdf, hidden, x=-2000, y=96)
    pdf.output(str(path))
    return path


def _scan_with_layer(path: Path, layer: list[str]) -> Path:
    """A scanned page (the digital page as an image) with ``layer`` written invisibly where the lines are, as
    OCR tools write searchable PDFs: the true lines make an honest layer, other text a lying one."""
    image = pdfium.PdfDocument(str(_digital(path.with_suffix(".src.pdf"))))[0].render(scale=200 / 72).to_pil()
    image.save(path.with_suffix(".png"))
    pdf = _pdf()
    pdf.image(str(path.with_suffix(".png")), x=0, y=0, w=612, h=792)
    pdf.text_mode = TextMode.INVISIBLE
    _write(pdf, layer)
    pdf.output(str(path))
    return path


def _parse(path: Path, **checks: Any) -> Any:
    options = ParserOptions(text_layer=TextLayerOptions(**checks)) if checks else ParserOptions()
    return DocumentParser(options=options).parse(path).pages[0]


def _assert_read_from_image(page: Any, why: str) -> None:
    assert page.status == "ok" and page.backend == "ocr", page
    assert page.text_layer_rejected is not None and why in page.text_layer_rejected, page.text_layer_rejected
    assert {b.origin for b in page.blocks} == {"ocr"}
    assert cer(page.text, "\n".join(LINES)) <= 0.02, page.text


def test_an_honest_layer_is_used(tmp_path: Path) -> None:
    page = _parse(_digital(tmp_path / "digital.pdf"))
    assert page.backend == "pdf_text" and page.text_layer_rejected is None
    assert cer(page.text, "\n".join(LINES)) == 0


def test_glyphs_without_unicode_map_are_read_from_the_image(tmp_path: Path) -> None:
    path = _without_unicode_map(tmp_path / "nomap.pdf")
    with open_document(path) as doc:
        layer = doc.page(1).text_layer(200)
        assert layer is not None and layer.rejected is not None and "not text" in layer.rejected
        assert doc.page(1).text_blocks(200) is None
    _assert_read_from_image(_parse(path), "not text")
    # and the page's record (a LlamaIndex / LangChain page document's metadata) says so
    [record] = page_records(DocumentParser().parse(path))
    assert "not text" in str(record.metadata["text_layer_rejected"])


def test_text_outside_the_page_is_not_trusted(tmp_path: Path) -> None:
    path = _off_page(tmp_path / "offpage.pdf")
    _assert_read_from_image(_parse(path), "outside the page")
    # the threshold is an option: allowed, the off-page words are dropped and the visible lines kept
    page = _parse(path, max_offpage_chars=0.9)
    assert page.backend == "pdf_text" and cer(page.text, "\n".join(LINES)) == 0


def test_an_invisible_layer_that_matches_its_scan_is_used(tmp_path: Path) -> None:
    page = _parse(_scan_with_layer(tmp_path / "searchable.pdf", LINES))
    assert page.backend == "pdf_text" and page.text_layer_rejected is None
    assert cer(page.text, "\n".join(LINES)) == 0


def test_an_invisible_layer_that_lies_about_its_scan_is_read_from_the_image(tmp_path: Path) -> None:
    rng = random.Random(5)
    lies = [" ".join(rng.choice(_WORDS) for _ in range(9)) for _ in LINES]
    path = _scan_with_layer(tmp_path / "lying.pdf", lies)
    _assert_read_from_image(_parse(path), "OCR of the image reads something else")
    # with the comparison off the layer is taken as it is (the user's choice, stated in the option)
    assert _parse(path, sample_lines=0).backend == "pdf_text"


@pytest.mark.parametrize("bad", ["E000", "FFFD", "0007"])
def test_characters_that_are_not_text_count_against_the_layer(tmp_path: Path, bad: str) -> None:
    # the font's Unicode map sends every "e" to a private-use, replacement or control character
    data = _digital(tmp_path / "src.pdf").read_bytes()
    cmap = data.index(b"beginbfchar")
    start = data.index(b"> <0065>", cmap) + 2
    (tmp_path / "bad.pdf").write_bytes(data[:start] + f"<{bad}>".encode() + data[start + 6 :])
    with open_document(tmp_path / "bad.pdf") as doc:
        layer = doc.page(1).text_layer(200)
        assert layer is not None and layer.rejected is not None and "not text" in layer.rejected
        relaxed = doc.page(1).text_layer(200, checks=TextLayerOptions(max_bad_chars=0.5))
        assert relaxed is not None and relaxed.rejected is None
        text = " ".join(b.text for b in relaxed.blocks)
        assert chr(int(bad, 16)) not in text and "Invoic" in text  # dropped, never passed on as text


def test_born_digital_ruled_table_and_bold_heading_from_the_layer(tmp_path: Path) -> None:
    """A table drawn with vector lines is a table on a text-layer page (its cells follow the rules), and a
    heading set in an embedded bold face is a heading though the font declares weight 400, as most do."""
    pdf = _pdf()
    pdf.add_font("serif", "B", find_font("serif-bold"))
    pdf.set_font("serif", "B", 14)
    pdf.text(72, 80, "Delivery Schedule")
    pdf.set_font("serif", "", 14)
    _write(pdf, LINES[:2], y=110)
    # two columns: too few for a table by alignment alone, as in tagged.pdf; the rules make it one
    rows = [["Item", "Due"], ["Pump seals", "March"], ["Valves", "April"]]
    top, height, cols = 180.0, 24.0, [72.0, 260.0, 460.0]
    pdf.set_line_width(0.8)
    for k in range(len(rows) + 1):
        pdf.line(cols[0], top + k * height, cols[-1], top + k * height)
    for x in cols:
        pdf.line(x, top, x, top + len(rows) * height)
    for k, row in enumerate(rows):
        for x, cell in zip(cols, row, strict=False):
            pdf.text(x + 6, top + k * height + 17, cell)
    path = tmp_path / "schedule.pdf"
    data = bytes(pdf.output())
    # fpdf2 marks the bold face (ForceBold, a wide stem); many producers do not: take the marks out
    assert data.count(b"/Flags 262148") == 1 and data.count(b"/StemV 165") == 1
    path.write_bytes(data.replace(b"/Flags 262148", b"/Flags 4     ").replace(b"/StemV 165", b"/StemV 80 "))
    with pdfium.PdfDocument(path) as doc:  # the premise: pdfium reads the bold face's weight as 400
        textpage = doc[0].get_textpage()
        assert pdfium.raw.FPDFText_GetFontWeight(textpage.raw, 0) < 600
    [page] = DocumentParser().parse(path).pages
    assert page.backend == "pdf_text"
    kinds = [(b.type.value, b.text) for b in page.blocks]
    assert kinds[0] == ("section_header", "Delivery Schedule"), kinds
    [table] = [b for b in page.blocks if b.type.value == "table"]
    assert table.text == "\n".join("\t".join(r) for r in rows)


def test_an_honest_layer_in_a_subset_font_flagged_symbolic_costs_no_ocr(tmp_path: Path) -> None:
    """fpdf2 (like LibreOffice and many producers) flags its embedded subset font symbolic; a layer that reads
    as text is used as it is, with no OCR comparison (born-digital pages stay milliseconds each)."""
    path = _digital(tmp_path / "digital.pdf")
    import ctypes

    with pdfium.PdfDocument(path) as pdf:  # the premise: the font is flagged symbolic (4), not nonsymbolic (32)
        flags, name = ctypes.c_int(), ctypes.create_string_buffer(128)
        page = pdf[0]
        textpage = page.get_textpage()
        pdfium.raw.FPDFText_GetFontInfo(textpage.raw, 0, name, 128, ctypes.byref(flags))
        assert flags.value & 4 and not flags.value & 32
    with open_document(path) as doc:
        layer = doc.page(1).text_layer(200)
        assert layer is not None and layer.rejected is None and layer.verify == []


def test_words_that_pdfium_marks_hyphenated_at_a_line_end_are_whole() -> None:
    """pdfium gives a text layer's line-end hyphen as U+0002 and the rest of the word right after it: the word is
    read whole ("practic-" / "ing": "practicing"), where it used to fall apart ("practic ing"). The page is a
    real one of the olmOCR-bench dev set (docling's legal-aid table, see bench/olmocr_dev/SOURCES-docling.md)."""
    page = Path(__file__).parents[2] / "bench" / "olmocr_dev" / "pdfs" / "docling" / "legal_aid_table_p1.pdf"
    text = DocumentParser(progress=False).parse(page).text
    for word in ("appointments", "witnesses", "practicing", "population"):
        assert word in text
    assert "practic ing" not in text and "\x02" not in text


def test_text_is_composed_and_typographic_quote_pairs_are_double_quotes() -> None:
    from qwenvl.layout.analysis import Line, RawLayout, Region, Word, assemble, plain_text

    assert plain_text("Mina\u0301c\u030c wrote \u2018\u2018so\u2019\u2019") == "Min\u00e1\u010d wrote \u201cso\u201d"
    words = [Word("Mina\u0301c\u030c", (10, 10, 60, 30)), Word("\u2018\u2018wrote\u2019\u2019", (70, 10, 140, 30))]
    [block] = assemble(
        RawLayout(400, 400, [Region([Line(words, (10, 10, 140, 30), 20)])]), page_number=1, origin="pdf_text"
    )
    assert block.text == "Min\u00e1\u010d \u201cwrote\u201d"
