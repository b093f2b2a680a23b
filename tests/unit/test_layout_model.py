"""The layout model, reading order, table and list analysis, exports and citations (no OCR, no engine)."""

from __future__ import annotations

import json

import pytest
from PIL import Image as PILImage

from qwenvl.layout import BBox, Block, BlockType, Page, ParsedDocument, crop, highlight
from qwenvl.layout.analysis import Line, RawLayout, Region, Word, assemble, group_lines, reading_order
from qwenvl.layout.export import block_metadata, dumps_records, html_table_rows, rows_to_html, to_markdown
from qwenvl.layout.vlm import Tile, VLMLayoutConfig, blocks_from_result, layout_schema, split_tile
from qwenvl.messages import ChatResult


def _doc() -> ParsedDocument:
    blocks = [
        Block(
            id="p1-b0",
            type=BlockType.TITLE,
            bbox=BBox.of(10, 10, 300, 40),
            text="Annual Report",
            reading_order=0,
            level=1,
            origin="ocr",
        ),
        Block(
            id="p1-b2",
            type=BlockType.TABLE,
            bbox=BBox.of(10, 200, 300, 260),
            text="a\tb\n1\t2",
            html=rows_to_html([["a", "b"], ["1", "2"]]),
            reading_order=2,
            origin="ocr",
            confidence=0.9,
        ),
        Block(
            id="p1-b1",
            type=BlockType.PARAGRAPH,
            bbox=BBox.of(10, 60, 300, 180),
            text="Revenue grew.",
            reading_order=1,
            origin="ocr",
        ),
        Block(
            id="p1-b3",
            type=BlockType.LIST_ITEM,
            bbox=BBox.of(10, 270, 300, 290),
            text="\u2022 first item",
            reading_order=3,
            origin="ocr",
        ),
        Block(
            id="p1-b4",
            type=BlockType.PAGE_NUMBER,
            bbox=BBox.of(140, 380, 160, 395),
            text="7",
            reading_order=4,
            origin="ocr",
        ),
    ]
    return ParsedDocument(source="report.pdf", pages=[Page(number=1, width=320, height=400, dpi=72, blocks=blocks)])


def test_bbox_geometry() -> None:
    a = BBox.of(10, 20, 0, 0)
    assert a.xyxy == (0, 0, 10, 20) and a.area == 200
    b = BBox.of(5, 0, 15, 20)
    assert a.iou(b) == pytest.approx(100 / 300)
    assert a.iou(BBox.of(50, 50, 60, 60)) == 0.0
    assert a.union(b).xyxy == (0, 0, 15, 20)
    assert BBox.of(-5, -5, 500, 50).clip(100, 40).xyxy == (0, 0, 100, 40)
    assert BBox.of(0, 0, 50, 100).to_grid(100, 200) == (0, 0, 500, 500)
    assert BBox.of(0, 0, 200, 400).to_points(200) == (0, 0, 72, 144)


def test_page_sorts_blocks_and_json_round_trips() -> None:
    doc = _doc()
    assert [b.reading_order for b in doc.pages[0].blocks] == [0, 1, 2, 3, 4]
    data = doc.to_json()
    assert json.loads(data)["schema_version"] == "qwenvl.layout/2"
    old = json.loads(data) | {"schema_version": "qwenvl.layout/1"}  # version 1 documents still read
    assert ParsedDocument.from_json(json.dumps(old)).schema_version == "qwenvl.layout/2"
    again = ParsedDocument.from_json(data)
    assert again == doc
    bad = json.loads(data)
    bad["schema_version"] = "qwenvl.layout/0"
    with pytest.raises(ValueError, match="schema_version"):
        ParsedDocument.from_json(json.dumps(bad))
    assert doc.status_counts() == {"ok": 1, "fallback": 0, "failed": 0}


def test_markdown_export() -> None:
    md = to_markdown(_doc())
    assert md.index("# Annual Report") < md.index("Revenue grew.") < md.index("| a | b |")
    assert "| --- | --- |" in md and "| 1 | 2 |" in md
    assert "- first item" in md
    assert "\n7\n" not in md  # page numbers are left out


def test_block_metadata_is_flat_and_json_safe() -> None:
    doc = _doc()
    page = doc.pages[0]
    meta = block_metadata(doc.source, page, page.blocks[2])
    assert all(isinstance(v, str | int | float) for v in meta.values())
    assert meta["block_type"] == "table" and meta["page"] == 1 and (meta["x0"], meta["y1"]) == (10, 260)
    assert meta["page_width"] == 320 and meta["reading_order"] == 2
    records = [json.loads(line) for line in dumps_records(doc).splitlines()]
    assert len(records) == 5 and records[2]["html"].startswith("<table>")


def test_html_table_rows_tolerates_sloppy_html() -> None:
    assert html_table_rows("<table><tr><th>A</th><th>B</th><tr><td>1<td>2</table>") == [["A", "B"], ["1", "2"]]
    assert rows_to_html([["<x>", "&"]]) == "<table><tr><th>&lt;x&gt;</th><th>&amp;</th></tr></table>"


def test_reading_order_columns_title_and_footer() -> None:
    boxes = [
        (100, 50, 900, 100),  # 0 title across both columns
        (520, 150, 900, 300),  # 1 right column, first
        (100, 150, 480, 300),  # 2 left column, first
        (100, 320, 480, 500),  # 3 left column, second
        (520, 320, 900, 450),  # 4 right column, second (shorter)
        (100, 520, 480, 600),  # 5 left column, third (right column ended)
        (100, 700, 900, 740),  # 6 footer across
    ]
    assert reading_order(boxes) == [0, 2, 3, 5, 1, 4, 6]
    # one column: top to bottom
    assert reading_order([(0, 300, 10, 310), (0, 0, 10, 10), (0, 100, 10, 110)]) == [1, 2, 0]


def test_full_width_blocks_cut_columns_into_bands() -> None:
    # a heading across both columns below them, touching the right column's last block (a skewed scan: no
    # empty strip between them), then two more columns: each band left column first, the heading between
    boxes = [
        (100, 100, 480, 300),  # 0 left, band 1
        (520, 100, 900, 250),  # 1 right, band 1
        (100, 320, 480, 560),  # 2 left, band 1
        (520, 270, 900, 612),  # 3 right, band 1, reaching into the heading's lines
        (110, 600, 890, 640),  # 4 heading across
        (100, 660, 480, 800),  # 5 left, band 2
        (520, 660, 900, 800),  # 6 right, band 2
    ]
    assert reading_order(boxes) == [0, 2, 1, 3, 4, 5, 6]
    # a figure across the columns mid-page, and a footer under them
    boxes = [
        (100, 100, 480, 300),  # 0 left
        (520, 100, 900, 300),  # 1 right
        (100, 330, 900, 600),  # 2 figure across
        (100, 630, 480, 800),  # 3 left
        (100, 810, 480, 900),  # 4 left
        (520, 630, 900, 900),  # 5 right
        (300, 950, 700, 980),  # 6 footer, centred under both columns
    ]
    assert reading_order(boxes) == [0, 1, 2, 3, 4, 5, 6]
    # three columns under a full-width title, a table across two of them... and one below all three
    boxes = [
        (100, 40, 900, 90),  # 0 title
        (100, 100, 360, 400),  # 1 column 1
        (370, 100, 630, 250),  # 2 column 2
        (370, 260, 630, 400),  # 3 column 2
        (640, 100, 900, 400),  # 4 column 3
        (100, 420, 900, 500),  # 5 table across all three
        (100, 520, 360, 700),  # 6 column 1
        (370, 520, 630, 700),  # 7 column 2
        (640, 520, 900, 700),  # 8 column 3
    ]
    assert reading_order(boxes, min_gap=8) == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    # a short heading under two columns that end together (then full-width text): read after both columns;
    # under columns of unequal length, a block below the shorter one continues the longer column
    boxes = [
        (100, 100, 480, 400),  # 0 left
        (520, 100, 900, 400),  # 1 right, ending with the left
        (100, 430, 300, 460),  # 2 heading below both, in the left column's width
        (100, 480, 900, 600),  # 3 full-width text
    ]
    assert reading_order(boxes) == [0, 1, 2, 3]
    boxes = [(100, 100, 480, 400), (520, 100, 900, 250), (100, 430, 480, 600)]  # the right column is short
    assert reading_order(boxes) == [0, 2, 1]
    # one column with short blocks (a heading, a centred page number): still top to bottom
    boxes = [(100, 100, 300, 130), (100, 150, 900, 400), (100, 420, 900, 600), (480, 950, 520, 980)]
    assert reading_order(boxes) == [0, 1, 2, 3]


def _line(text: str, x: float, y: float, h: float = 20, char_w: float = 10) -> Line:
    words, cx = [], x
    for token in text.split():
        words.append(Word(token, (cx, y, cx + char_w * len(token), y + h), 0.9))
        cx += char_w * (len(token) + 1)
    return Line(words, (x, y, words[-1].bbox[2], y + h), h)


def test_group_lines_keeps_columns_apart() -> None:
    lines = [
        _line("left one", 0, 0),
        _line("right one", 500, 0),
        _line("left two", 0, 26),
        _line("right two", 500, 26),
        _line("left far below", 0, 200),
    ]
    regions = group_lines(lines)
    texts = sorted(" / ".join(ln.text for ln in r.lines) for r in regions)
    assert texts == ["left far below", "left one / left two", "right one / right two"]


def test_assemble_types_headings_lists_tables_and_numbers() -> None:
    regions = [
        Region([_line("Big Title", 50, 40, h=44, char_w=22)]),
        Region([_line("Body text that runs on.", 50, 120), _line("More body text here.", 50, 146)]),
        Region(
            [_line("\u00a2 first point", 70, 200), _line("continued", 90, 226), _line("\u00a2 second point", 70, 252)]
        ),
        # a table without ruling lines: three columns aligned over three lines
        Region([_line("Item", 50, 320), _line("Qty", 400, 320), _line("Price", 700, 320)]),
        Region([_line("12", 980, 1960)]),
    ]
    table_lines = [_line("Item", 50, 320), _line("Apple", 50, 346), _line("Pear", 50, 372)]
    for ln, (q, p) in zip(table_lines, [("Qty", "Price"), ("3", "1.50"), ("4", "2.25")], strict=True):
        ln.words += _line(q, 400, ln.bbox[1]).words + _line(p, 700, ln.bbox[1]).words
        ln.bbox = (50, ln.bbox[1], 750, ln.bbox[3])
    regions[3] = Region(table_lines)
    blocks = assemble(RawLayout(1000, 2000, regions), page_number=3, origin="ocr")
    kinds = [b.type for b in blocks]
    assert kinds == [
        BlockType.TITLE,
        BlockType.PARAGRAPH,
        BlockType.LIST_ITEM,
        BlockType.LIST_ITEM,
        BlockType.TABLE,
        BlockType.PAGE_NUMBER,
    ]
    assert blocks[0].level == 1
    assert blocks[2].text == "\u2022 first point continued" and blocks[3].text == "\u2022 second point"
    assert html_table_rows(blocks[4].html or "") == [
        ["Item", "Qty", "Price"],
        ["Apple", "3", "1.50"],
        ["Pear", "4", "2.25"],
    ]
    assert [b.id for b in blocks] == [f"p3-b{i}" for i in range(6)]
    assert blocks[1].confidence == pytest.approx(0.9)


def test_ruled_table_cells_follow_the_rules() -> None:
    # a 2x2 grid of rules with one word per cell, plus a long word spilling nowhere
    rules = [
        (0, 0, 400, 2),
        (0, 50, 400, 52),
        (0, 100, 400, 102),
        (0, 0, 2, 102),
        (200, 0, 202, 102),
        (398, 0, 400, 102),
    ]
    words = [
        Word("a", (10, 10, 30, 40)),
        Word("b", (210, 10, 230, 40)),
        Word("c", (10, 60, 30, 90)),
        Word("d d", (210, 60, 260, 90)),
    ]
    region = Region([Line(words[:2], (10, 10, 230, 40), 30), Line(words[2:], (10, 60, 260, 90), 30)])
    blocks = assemble(RawLayout(500, 500, [region], rules=rules), page_number=1, origin="ocr")
    assert len(blocks) == 1 and blocks[0].type is BlockType.TABLE
    assert html_table_rows(blocks[0].html or "") == [["a", "b"], ["c", "d d"]]
    assert blocks[0].text == "a\tb\nc\td d"


def test_vlm_schema_and_box_mapping() -> None:
    config = VLMLayoutConfig(max_blocks=5, max_text_chars=30, min_blocks=1)
    schema = layout_schema(config)
    items = schema["properties"]["blocks"]
    assert items["maxItems"] == 5 and items["minItems"] == 1
    assert items["items"]["properties"]["bbox"]["items"]["maximum"] == 1000
    assert "table" in items["items"]["properties"]["type"]["enum"]
    # a tile covering the lower half of a 400x600 page: grid boxes map into that half
    tile = split_tile(Tile(0, 0, 400, 600), overlap=0)[1]
    assert (tile.y0, tile.y1, tile.depth) == (300, 600, 1)
    result = ChatResult(
        text="",
        parsed={
            "blocks": [
                {"type": "table", "bbox": [500, 1000, 0, 0], "text": "<table><tr><td>x</td><td>y</td></tr></table>"},
                {"type": "title", "bbox": [0, 0, 1000, 100], "text": " T "},
            ]
        },
    )
    blocks = blocks_from_result(result, tile, config, page_number=2, page_size=(400, 600))
    assert blocks[0].bbox.xyxy == (0, 300, 200, 600)
    assert blocks[0].text == "x\ty" and blocks[0].html is not None
    assert blocks[1].bbox.xyxy == (0, 300, 400, 330) and blocks[1].text == "T" and blocks[1].level == 1
    # Qwen2.5-VL style absolute boxes are scaled from the size the model saw
    pixels = VLMLayoutConfig(coords="pixels", min_pixels=28 * 28, max_pixels=200 * 300)
    result = ChatResult(text="", parsed={"blocks": [{"type": "paragraph", "bbox": [0, 0, 196, 308], "text": "p"}]})
    (block,) = blocks_from_result(result, Tile(0, 0, 400, 600), pixels, page_number=1, page_size=(400, 600))
    assert block.bbox.x1 == pytest.approx(400) and block.bbox.y1 == pytest.approx(600)


def test_highlight_and_crop() -> None:
    page = PILImage.new("RGB", (200, 100), "white")
    out = highlight(page, [BBox.of(10, 10, 60, 40), (100, 50, 150, 90)], labels=["[1]", "[2]"])
    assert out.size == page.size and out.getpixel((30, 25)) != (255, 255, 255)
    assert out.getpixel((80, 5)) == (255, 255, 255)
    assert crop(page, BBox.of(10, 10, 60, 40), padding=5).size == (60, 40)
    assert crop(page, (190, 90, 260, 130), padding=0).size == (10, 10)
    with pytest.raises(ValueError, match="empty or outside"):
        crop(page, (300, 300, 400, 400))


def test_line_fragments_go_back_into_their_paragraph() -> None:
    # OCR boxed the last words of the paragraph's second line on their own (same baseline, a word space on)
    paragraph = Region(
        [
            _line("The contract runs for three years from", 50, 100),
            _line("the date of signature and may be", 50, 126),
            _line("renewed once by written notice.", 50, 152),
        ]
    )
    fragment = Region([_line("extended or", 50 + 10 * 33, 126)])
    blocks = assemble(RawLayout(1000, 1000, [fragment, paragraph]), page_number=1, origin="ocr")
    assert [b.text for b in blocks] == [
        "The contract runs for three years from the date of signature and may be extended or renewed once by "
        "written notice."
    ]
    # a column's text at the same height is not a fragment: it starts where other blocks start
    left = Region([_line("left column line", 50, 100), _line("and its next line", 50, 126)])
    right = [Region([_line("right column", 230, 100)]), Region([_line("more right text", 230, 300)])]
    blocks = assemble(RawLayout(1000, 1000, [left, *right]), page_number=1, origin="ocr")
    assert len(blocks) == 3


def test_bullet_misreads_are_list_items_and_headings_need_more_than_one_line() -> None:
    # A scanned bullet read as "®" (or "e"): items when the page uses the glyph twice or the text hangs under it;
    # never a heading, whatever its height. Body text is 20 high; the "®" lines are 24 (the glyph is tall).
    body = [_line("Body text of the page runs across the whole line here.", 50, 60 + 26 * k) for k in range(6)]
    items = [Region([_line("\u00ae Pay the invoice within thirty days", 70, 300 + 60 * k, h=24)]) for k in range(2)]
    hanging = Region([_line("e Return the goods unopened to the", 70, 500), _line("warehouse at the address", 90, 526)])
    regions = [Region(body), *items, hanging]
    blocks = assemble(RawLayout(1000, 1000, regions), page_number=1, origin="ocr")
    kinds = {b.text.split()[1] if b.text.startswith("\u2022") else b.text.split()[0]: b.type for b in blocks}
    assert [b.type for b in blocks].count(BlockType.LIST_ITEM) == 3, [(b.type, b.text) for b in blocks]
    assert all(b.text.startswith("\u2022 ") for b in blocks if b.type is BlockType.LIST_ITEM)
    assert BlockType.SECTION_HEADER not in kinds.values()
    # a single "e" at a line start with no hanging indent and no second use is text
    lone = assemble(
        RawLayout(1000, 1000, [Region(body), Region([_line("e mail us at the office", 50, 400)])]),
        page_number=1,
        origin="ocr",
    )
    assert [b.type for b in lone] == [BlockType.PARAGRAPH, BlockType.PARAGRAPH]


def test_body_size_headings_by_number_and_weight() -> None:
    body = [_line("Body text of the page runs across the whole line here.", 50, 60 + 26 * k) for k in range(6)]
    numbered = Region([_line("2.1 Scope of the Work", 50, 250)])  # body size, numbered: a heading (level 3)
    item = Region([_line("1. Pay the invoice", 50, 300)])  # one level, plain: not a heading
    bold = Region([_line("Payment Terms", 50, 350)])
    bold.lines[0].bold = True  # bold at body size: a heading
    sentence = Region([_line("This line is bold but ends as a sentence.", 50, 400)])
    sentence.lines[0].bold = True
    regions = [Region(body), numbered, item, bold, sentence]
    blocks = assemble(RawLayout(1000, 1000, regions), page_number=1, origin="ocr")
    typed = {b.text: (b.type, b.level) for b in blocks}
    assert typed["2.1 Scope of the Work"] == (BlockType.SECTION_HEADER, 3)
    assert typed["1. Pay the invoice"][0] is BlockType.PARAGRAPH
    assert typed["Payment Terms"][0] is BlockType.SECTION_HEADER
    assert typed["This line is bold but ends as a sentence."][0] is BlockType.PARAGRAPH


def test_bold_is_measured_on_the_ink() -> None:
    # strokes twice as wide on one line: that line is bold, the others not
    import numpy as np

    ink = np.full((400, 1000), 255, dtype=np.uint8)
    lines = [_line("abc def ghi", 50, 40 + 60 * k) for k in range(4)]
    for k, line in enumerate(lines):
        width = 6 if k == 2 else 3
        for word in line.words:
            x0, y0, x1, y1 = (int(v) for v in word.bbox)
            for x in range(x0, x1, 10):
                ink[y0:y1, x : x + width] = 0
    from qwenvl.layout.analysis import _mark_bold

    _mark_bold([Region(lines)], ink)
    assert [line.bold for line in lines] == [False, False, True, False]


def test_underlined_heading_at_the_top_of_a_page_without_margins() -> None:
    # a typewritten page photographed edge to edge: its underlined first line is a heading, not a running header
    # (Tesseract reports the underline as a horizontal rule under the line)
    heading = Region([_line("Linzensoep a la Waterman", 20, 10)])
    body = [_line("De linzen wassen en in 1 liter kokend water laten weken.", 20, 80 + 26 * k) for k in range(6)]
    underline = (18.0, 32.0, 262.0, 36.0)
    blocks = assemble(RawLayout(1000, 400, [heading, Region(body)], rules=[underline]), page_number=1, origin="ocr")
    assert [(b.type, b.text[:10]) for b in blocks][0] == (BlockType.SECTION_HEADER, "Linzensoep")
    # without the rule it is the page's running header
    plain = assemble(
        RawLayout(1000, 400, [Region([_line("Linzensoep a la Waterman", 20, 10)]), Region(body)]),
        page_number=1,
        origin="ocr",
    )
    assert plain[0].type is BlockType.PAGE_HEADER


def test_a_bold_heading_is_not_joined_to_the_paragraph_under_it() -> None:
    body = [_line("Body text of the page runs across the whole line here.", 50, 60 + 26 * k) for k in range(6)]
    heading = Region([_line("Recording a Sequence", 50, 250)])
    heading.lines[0].bold = True
    under = Region([_line("To record a sequence, press RECORD", 50, 272), _line("and PLAY to start.", 50, 298)])
    blocks = assemble(RawLayout(1000, 1000, [Region(body), heading, under]), page_number=1, origin="ocr")
    assert [(b.type, b.text) for b in blocks][1:] == [
        (BlockType.SECTION_HEADER, "Recording a Sequence"),
        (BlockType.PARAGRAPH, "To record a sequence, press RECORD and PLAY to start."),
    ]


def test_bold_labels_of_a_key_value_list_are_not_headings() -> None:
    body = [_line("Body text of the page runs across the whole line here.", 50, 60 + 26 * k) for k in range(6)]
    rows = []
    for k, (key, value) in enumerate([("Kernel", "monolithic kernel"), ("Licence", "GPLv2 and others")]):
        label = Region([_line(key, 50, 300 + 30 * k)])
        label.lines[0].bold = True
        rows += [label, Region([_line(value, 200, 300 + 30 * k)])]
    blocks = assemble(RawLayout(1000, 1000, [Region(body), *rows]), page_number=1, origin="ocr")
    assert BlockType.SECTION_HEADER not in {b.type for b in blocks}, [(b.type, b.text) for b in blocks]


def test_a_paragraph_that_runs_out_of_its_column_is_cut_there() -> None:
    # OCR ran the right column's paragraph on into the full-width lines under a picture and its caption
    column = [_line("right column text of the story goes on", 500, 100 + 26 * k) for k in range(4)]
    below = [
        _line("then the text runs the whole width of the page from the left margin on", 40, 210 + 26 * k)
        for k in range(2)
    ]
    caption = Region([_line("THEY TIP-TOED ALONG.", 60, 180, h=14, char_w=8)])
    figure = (40.0, 60.0, 460.0, 170.0)
    raw = RawLayout(1000, 400, [Region(column + below), caption], figures=[figure])
    blocks = assemble(raw, page_number=1, origin="ocr")
    texts = [b.text[:12] for b in blocks]
    assert texts.index("THEY TIP-TOE") < texts.index("then the tex"), texts
    assert texts.index("right column") < texts.index("then the tex"), texts


def test_a_full_stop_of_the_column_to_the_left_is_no_bullet() -> None:
    import numpy as np

    from qwenvl.layout.analysis import _restore_bullets

    ink = np.full((200, 1000), 255, dtype=np.uint8)
    left = _line("the left column ends here.", 50, 40)
    right = _line("simply use the controls", 330, 40)
    x1 = int(left.words[-1].bbox[2])
    ink[52:58, x1 - 6 : x1] = 0  # the full stop, inside the left line's last word, 20 px left of the right line
    _restore_bullets([Region([left]), Region([right])], ink)
    assert right.words[0].text == "simply"
    # the same blob on its own is a bullet OCR dropped
    alone = _line("simply use the controls", 330, 40)
    _restore_bullets([Region([alone])], ink)
    assert alone.words[0].text == "\u2022"


def test_a_lone_letter_read_off_a_border_heads_nothing() -> None:
    body = [_line("Body text of the page runs across the whole line here.", 50, 60 + 26 * k) for k in range(6)]
    border = Region([Line([Word("i", (600, 300, 604, 344), 0.3)], (600, 300, 604, 344), 44)])
    blocks = assemble(RawLayout(1000, 1000, [Region(body), border]), page_number=1, origin="ocr")
    assert [b.type for b in blocks] == [BlockType.PARAGRAPH, BlockType.PARAGRAPH]


def test_a_json_list_is_a_typed_error_not_an_attribute_error() -> None:
    from qwenvl.errors import LayoutError
    from qwenvl.layout import ParsedDocument

    doc = ParsedDocument(source="x.pdf")
    assert ParsedDocument.from_json(doc.to_json()) == doc
    wrong_pages = json.dumps({"schema_version": doc.schema_version, "source": "x", "pages": 7})
    for bad in ("[" + doc.to_json() + "]", "42", "not json", wrong_pages):
        with pytest.raises(LayoutError):
            ParsedDocument.from_json(bad)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("layout_format", "markdown"), ("layout_format", "HTML"), ("coords", "points"), ("backend", "pdf")],
)
def test_an_option_value_outside_its_set_is_refused_naming_the_valid_ones(keyword: str, value: str) -> None:
    from qwenvl.errors import LayoutError
    from qwenvl.layout import DocumentParser

    with pytest.raises(LayoutError, match=f"{value!r}: use one of '") as caught:
        DocumentParser(**{keyword: value})  # type: ignore[arg-type]
    assert "'json'" in str(caught.value) or "'grid'" in str(caught.value) or "'auto'" in str(caught.value)
