"""The layout model: a parsed document is pages of typed, boxed blocks in reading order."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from enum import StrEnum
from typing import Literal

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
]

#: Written into every exported document; bumped when the JSON shape changes incompatibly.
SCHEMA_VERSION = "qwenvl.layout/1"

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
    bbox: BBox = Field(description="Where it is, in page pixels")
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
        if version != SCHEMA_VERSION:
            raise LayoutError(f"schema_version {version!r} is not {SCHEMA_VERSION!r}: re-parse the document")
        try:
            return cls.model_validate(raw)
        except ValueError as exc:  # pydantic's ValidationError
            raise LayoutError(f"not a valid document: {exc}") from None

    def to_markdown(self) -> str:
        """The document as Markdown (see `qwenvl.layout.export.to_markdown`)."""
        from qwenvl.layout.export import to_markdown

        return to_markdown(self)
