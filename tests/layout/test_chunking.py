"""Chunking of parsed documents: sizes, tables kept whole, heading paths, block mode."""

from __future__ import annotations

from qwenvl.layout import BBox, Block, BlockType, Page, ParsedDocument
from qwenvl.layout.chunking import chunk_document

FLAT = (str, int, float)


def _synthetic_doc() -> ParsedDocument:
    def block(i: int, kind: BlockType, text: str, level: int | None = None) -> Block:
        return Block(
            id=f"p1-b{i}",
            type=kind,
            bbox=BBox.of(10, 10 + 50 * i, 500, 40 + 50 * i),
            text=text,
            reading_order=i,
            level=level,
            origin="ocr",
        )

    words = " ".join(["word"] * 40)
    page = Page(
        number=1,
        width=600,
        height=1200,
        dpi=200,
        blocks=[
            block(0, BlockType.TITLE, "Report", 1),
            block(1, BlockType.PARAGRAPH, words),
            block(2, BlockType.SECTION_HEADER, "Costs", 2),
            block(3, BlockType.PARAGRAPH, words),
            block(4, BlockType.PARAGRAPH, words),
            block(5, BlockType.TABLE, "\t".join(["cell"] * 100)),
            block(6, BlockType.PARAGRAPH, "tail"),
            block(7, BlockType.PAGE_NUMBER, "3"),
        ],
    )
    page2 = Page(number=2, width=600, height=1200, dpi=200, blocks=[block(0, BlockType.PARAGRAPH, "next page")])
    return ParsedDocument(source="r.pdf", pages=[page, page2])


def test_chunks_keep_tables_whole_and_carry_headings() -> None:
    chunks = list(chunk_document(_synthetic_doc(), max_size=60))
    assert [[b.id for b in c.blocks] for c in chunks] == [
        ["p1-b0", "p1-b1"],
        ["p1-b2", "p1-b3"],
        ["p1-b4"],
        ["p1-b5"],
        ["p1-b6"],
        ["p1-b0"],
    ]
    assert [c.headings for c in chunks] == [
        ["Report"],
        ["Report", "Costs"],
        ["Report", "Costs"],
        ["Report", "Costs"],
        ["Report", "Costs"],
        ["Report", "Costs"],
    ]
    assert len(chunks[3].text.split()) == 100  # the table is longer than max_size and still one chunk
    meta = chunks[0].metadata()
    assert meta["block_type"] == "mixed" and meta["block_types"] == "title,paragraph"
    assert (meta["x0"], meta["y0"], meta["x1"], meta["y1"]) == (10, 10, 500, 90)
    assert chunks[-1].page.number == 2
    blocks = list(chunk_document(_synthetic_doc(), mode="block"))
    assert len(blocks) == 9 and blocks[7].blocks[0].type is BlockType.PAGE_NUMBER
