"""The layout model: a parsed document is pages of typed, boxed blocks in reading order, and its Markdown form."""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Iterator
from enum import StrEnum
from html.parser import HTMLParser
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from qwenvl.boxes import BBox
from qwenvl.errors import LayoutError

__all__ = [
    "SCHEMA_VERSION",
    "BBox",
    "Block",
    "BlockType",
    "Origin",
    "Page",
    "PageStatus",
    "PageUsage",
    "ParsedDocument",
    "block_markdown",
    "html_table_rows",
    "rows_to_html",
    "to_markdown",
]

#: Written into every exported document; bumped when the JSON shape changes incompatibly.
SCHEMA_VERSION = "qwenvl.layout/2"
#: older versions `ParsedDocument.from_json` still reads (version 2 added blocks without a box)
READABLE_VERSIONS = frozenset({"qwenvl.layout/1", SCHEMA_VERSION})

PageStatus = Literal["ok", "fallback", "failed"]
Origin = Literal["vlm", "ocr", "pdf_text"]


class BlockType(StrEnum):
    """What a block is on the page."""

    TITLE = "title"
    SECTION_HEADER = "section_header"
    PARAGRAPH = "paragraph"
    LIST_ITEM = "list_item"
    TABLE = "table"
    FIGURE = "figure"
    CAPTION = "caption"
    FORMULA = "formula"
    PAGE_HEADER = "page_header"
    PAGE_FOOTER = "page_footer"
    PAGE_NUMBER = "page_number"
    OTHER = "other"

    @property
    def is_heading(self) -> bool:
        """Titles and section headers: they open a section of the heading path."""
        return self.heading_level is not None

    @property
    def heading_level(self) -> int | None:
        """The default level of a heading type (1 for a title, 2 for a section header), None for the others."""
        return _HEADING_LEVELS.get(self)

    @property
    def is_furniture(self) -> bool:
        """Page headers, footers and numbers: on every page, left out of Markdown and of chunks."""
        return self in _FURNITURE


_HEADING_LEVELS = {BlockType.TITLE: 1, BlockType.SECTION_HEADER: 2}
_FURNITURE = frozenset({BlockType.PAGE_HEADER, BlockType.PAGE_FOOTER, BlockType.PAGE_NUMBER})


class Block(BaseModel):
    """One region of a page: its type, box, text and place in the reading order."""

    id: str = Field(description="Unique within the document: 'p{page}-b{index}'")
    type: BlockType = Field(description="What the block is")
    bbox: BBox | None = Field(
        description="Where it is, in page pixels; None when the backend could not place the block's text on the "
        "page (olmOCR answers: the text was not found among the page's words), never a made-up box"
    )
    text: str = Field(default="", description="The text; a table's is a line per row, cells split by tabs")
    html: str | None = Field(default=None, description="Tables only: the table as HTML")
    reading_order: int = Field(description="Position in the page's reading order, from 0")
    level: int | None = Field(default=None, description="Heading level: 1 for titles, 2+ for section headers")
    confidence: float | None = Field(default=None, description="0-1, when the backend gives one")
    origin: Origin = Field(description="Which backend produced the block: vlm, ocr or pdf_text")


class PageUsage(BaseModel):
    """Engine tokens spent on a page (zero for OCR and text-layer pages)."""

    prompt_tokens: int = 0
    image_tokens: int = 0
    completion_tokens: int = 0
    requests: int = Field(default=0, description="Engine requests made for the page, tiles and retries included")

    def add(self, usage: Any) -> None:
        """Count one more engine request and its tokens (a `qwenvl.Usage`)."""
        self.requests += 1
        self.prompt_tokens += usage.prompt_tokens
        self.image_tokens += usage.image_tokens
        self.completion_tokens += usage.completion_tokens


class Page(BaseModel):
    """One page: its size, blocks in reading order, and how it went."""

    number: int = Field(description="1-based page number within the document")
    width: int = Field(description="Width of the rendered page image in pixels")
    height: int = Field(description="Height of the rendered page image in pixels")
    dpi: float = Field(description="Resolution the page was rendered at (72 points per inch in the PDF)")
    blocks: list[Block] = Field(default_factory=list, description="Blocks sorted by reading order")
    status: PageStatus = Field(default="ok", description="ok; fallback (another backend did it); failed")
    error: str | None = Field(default=None, description="Why the page fell back or failed")
    backend: str = Field(default="", description="The backend that produced the blocks: vlm, ocr, pdf_text")
    text_layer_rejected: str | None = Field(
        default=None, description="Why the page's PDF text layer was not used (it was read from its image instead)"
    )
    usage: PageUsage = Field(default_factory=PageUsage, description="Engine tokens spent on it")

    @field_validator("blocks")
    @classmethod
    def _in_order(cls, blocks: list[Block]) -> list[Block]:
        return sorted(blocks, key=lambda b: b.reading_order)

    @property
    def text(self) -> str:
        """The page's text in reading order, blocks separated by blank lines."""
        return "\n\n".join(b.text for b in self.blocks if b.text)


class ParsedDocument(BaseModel):
    """A document parsed into pages of blocks; JSON round-trips through `to_json` / `from_json`."""

    schema_version: str = Field(default=SCHEMA_VERSION, description="The JSON shape's version")
    source: str = Field(description="Where the document came from: a path, URL or a name given to bytes")
    pages: list[Page] = Field(default_factory=list)
    error: str | None = Field(default=None, description="Why the document could not be opened (then no pages)")

    def blocks(self) -> Iterator[tuple[Page, Block]]:
        """Every block with its page, in page then reading order."""
        for page in self.pages:
            for block in page.blocks:
                yield page, block

    @property
    def text(self) -> str:
        """All pages' text in reading order."""
        return "\n\n".join(p.text for p in self.pages if p.text)

    def status_counts(self) -> dict[str, int]:
        """How many pages are ok, fallback and failed."""
        counts = Counter(p.status for p in self.pages)
        return {status: counts.get(status, 0) for status in ("ok", "fallback", "failed")}

    def to_json(self, indent: int | None = None) -> str:
        """The document as JSON (with `schema_version`)."""
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, data: str | bytes) -> ParsedDocument:
        """A document from `to_json` output; refuses another schema version."""
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise LayoutError(f"not JSON ({exc}): give the text ParsedDocument.to_json() wrote") from None
        if not isinstance(raw, dict):
            raise LayoutError(
                f"a JSON {type(raw).__name__}, not a document object: give one ParsedDocument.to_json() text "
                "(a JSON list of documents is read with [ParsedDocument.model_validate(d) for d in ...])"
            )
        version = raw.get("schema_version")
        if version not in READABLE_VERSIONS:
            raise LayoutError(f"schema_version {version!r} is not {SCHEMA_VERSION!r}: re-parse the document")
        raw["schema_version"] = SCHEMA_VERSION
        try:
            return cls.model_validate(raw)
        except ValueError as exc:  # pydantic's ValidationError
            raise LayoutError(f"not a valid document: {exc}") from None

    def to_markdown(self) -> str:
        """The document as Markdown (see `to_markdown`)."""
        return to_markdown(self)


# ---- Markdown ----------------------------------------------------------------------------------------------


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def _close_cell(self) -> None:
        if self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self._close_cell()
            self.rows.append([])
        elif tag in ("td", "th"):
            self._close_cell()
            if not self.rows:
                self.rows.append([])
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th", "tr", "table"):
            self._close_cell()

    def close(self) -> None:
        super().close()
        self._close_cell()

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def html_table_rows(table_html: str) -> list[list[str]]:
    """The cell texts of an HTML table, row by row (tolerates unclosed tags)."""
    parser = _TableParser()
    parser.feed(table_html)
    parser.close()
    return [row for row in parser.rows if row]


def rows_to_html(rows: list[list[str]]) -> str:
    """An HTML table of ``rows``; the first row as the header."""
    out = ["<table>"]
    for i, row in enumerate(rows):
        tag = "th" if i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{html.escape(cell)}</{tag}>" for cell in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _markdown_table(rows: list[list[str]]) -> str:
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(rows[0]), "|" + " --- |" * width] + [line(r) for r in rows[1:]])


#: a cell spanning more than one column or row
_MERGED_CELLS = re.compile(r"""(?:col|row)span\s*=\s*["']?\s*(?:[2-9]|[1-9]\d+)""", re.IGNORECASE)


def block_markdown(block: Block) -> str:
    """One block as Markdown."""
    text = block.text.strip()
    if block.type is BlockType.TITLE:
        return f"# {text}"
    if block.type is BlockType.SECTION_HEADER:
        return "#" * min(6, max(2, block.level or 2)) + f" {text}"
    if block.type is BlockType.TABLE:
        if block.html and _MERGED_CELLS.search(block.html):  # a Markdown table cannot merge cells: HTML it stays
            return block.html.strip()
        rows = html_table_rows(block.html) if block.html else []
        return _markdown_table(rows) if rows else text
    if block.type is BlockType.LIST_ITEM:
        return "- " + re.sub(r"^[\u2022\-*\u00b7\u25aa\u25cf]\s*", "", text)
    if block.type is BlockType.FIGURE:
        return f"![figure]({block.id})" + (f"\n\n{text}" if text else "")
    if block.type is BlockType.FORMULA:
        return f"$$\n{text}\n$$"
    return text


def to_markdown(document: ParsedDocument, *, page_breaks: bool = True) -> str:
    """The document as Markdown, page by page; page headers, footers and numbers are left out."""
    parts: list[str] = []
    for page in document.pages:
        if page_breaks:
            parts.append(f"<!-- page {page.number} ({page.status}) -->")
        parts.extend(block_markdown(b) for b in page.blocks if not b.type.is_furniture and (b.text or b.html))
    return "\n\n".join(p for p in parts if p) + "\n"
