"""Born-digital paragraphs are read as paragraphs, not as one block per line, whatever way the PDF sizes its text:
a 1 pt font scaled up by the text matrix (as some producers write every line) groups as text set at its size."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwenvl.layout import BlockType, DocumentParser
from tests.reliability.hostile_pdfs import pages_pdf

FIRST = [
    "The committee met in the spring to review the budget",
    "and agreed that the new library would open in the autumn,",
    "after the roof repairs were finished and the shelves were",
    "moved back into the reading rooms on the ground floor.",
]
SECOND = [
    "A second meeting in the summer heard the architect, who",
    "said that the old windows could be kept if their frames",
    "were mended, and the members voted to keep them all.",
]


def _lines(lines: list[str], top: float, *, scaled: bool) -> list[bytes]:
    """Each line in its own BT block at 11 pt: as ``1 Tf`` with an 11x text matrix, or as ``11 Tf``."""
    ops = []
    for k, line in enumerate(lines):
        y = top - 14 * k
        size, matrix = (b"1", b"11 0 0 11") if scaled else (b"11", b"1 0 0 1")
        ops.append(b"BT /F1 %s Tf %s 72 %g Tm (%s) Tj ET" % (size, matrix, y, line.encode("latin-1")))
    return ops


@pytest.mark.parametrize("scaled", [True, False], ids=["text-matrix-sized", "font-sized"])
def test_paragraph_lines_group_into_paragraphs(tmp_path: Path, scaled: bool) -> None:
    """Two paragraphs of lines 14 pt apart, 28 pt between them: two paragraph blocks of the whole text, however
    the size is set (pdfium gives the font size without the matrix: 1 pt, and every line was a paragraph)."""
    content = b"\n".join(_lines(FIRST, 720, scaled=scaled) + _lines(SECOND, 720 - 14 * len(FIRST) - 28, scaled=scaled))
    path = tmp_path / "paragraphs.pdf"
    path.write_bytes(pages_pdf([content]))
    page = DocumentParser(backend="auto", progress=False).parse(path).pages[0]
    assert page.backend == "pdf_text"
    blocks = [(b.type, b.text) for b in page.blocks]
    assert blocks == [(BlockType.PARAGRAPH, " ".join(FIRST)), (BlockType.PARAGRAPH, " ".join(SECOND))], blocks
