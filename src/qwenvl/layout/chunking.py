"""Blocks grouped for retrieval: one chunk per block, or blocks merged up to a size, with their heading path.

Chunks never cross a page (so each has one page and one box to cite) and never split a table. Page headers,
footers and numbers are left out of merged chunks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from qwenvl.layout.export import block_metadata
from qwenvl.layout.model import BBox, Block, BlockType, Page, ParsedDocument

__all__ = ["Chunk", "ChunkMode", "chunk_document", "chunk_page", "word_count"]

ChunkMode = Literal["block", "chunk"]


def word_count(text: str) -> int:
    """Words in ``text``: the default size measure (pass a tokenizer's count for tokens)."""
    return len(text.split())


@dataclass
class Chunk:
    """Blocks of one page, in reading order, with the heading path in force at the first block."""

    source: str
    page: Page
    blocks: list[Block]
    headings: list[str]

    @property
    def text(self) -> str:
        """The blocks' text, separated by blank lines (a table as its tab-separated rows)."""
        return "\n\n".join(b.text for b in self.blocks if b.text)

    @property
    def bbox(self) -> BBox | None:
        """The union of the blocks' boxes (None when none of them has one)."""
        boxes = [b.bbox for b in self.blocks if b.bbox is not None]
        if not boxes:
            return None
        box = boxes[0]
        for other in boxes[1:]:
            box = box.union(other)
        return box

    def metadata(self) -> dict[str, str | int | float]:
        """Flat, JSON-safe metadata: source, page, box, page size, types, reading order, heading path."""
        first = self.blocks[0]
        meta = block_metadata(self.source, self.page, first)
        box = self.bbox
        if box is not None:
            meta.update({k: round(v, 2) for k, v in zip(("x0", "y0", "x1", "y1"), box.xyxy, strict=True)})
            meta.pop("boxed", None)
        meta["headings"] = " > ".join(self.headings)
        if len(self.blocks) > 1:
            meta["block_type"] = "mixed" if len({b.type for b in self.blocks}) > 1 else first.type.value
            meta["block_types"] = ",".join(b.type.value for b in self.blocks)
            meta["block_id"] = ",".join(b.id for b in self.blocks)
            meta.pop("confidence", None)
        return meta


def _continues(current: list[Block], block: Block) -> bool:
    """Whether ``block`` reads on below the chunk's last block in the same column, and the chunk's box stays
    mostly its blocks' own area (a citation box should not cover a neighbouring column)."""
    a, b = current[-1].bbox, block.bbox
    if a is None or b is None or any(other.bbox is None for other in current):  # no box: no place to judge by
        return False
    overlap = min(a.x1, b.x1) - max(a.x0, b.x0)
    if b.y0 < a.y0 or overlap < 0.5 * min(a.width, b.width):
        return False
    box = b
    for other in current:
        if other.bbox is not None:
            box = box.union(other.bbox)
    return box.area <= 1.6 * (b.area + sum(other.bbox.area for other in current if other.bbox is not None))


def _update_headings(path: list[tuple[int, str]], block: Block) -> list[tuple[int, str]]:
    level = block.level or block.type.heading_level or 2
    return [h for h in path if h[0] < level] + [(level, " ".join(block.text.split()))]


def chunk_page(
    source: str,
    page: Page,
    *,
    mode: ChunkMode = "chunk",
    max_size: int = 256,
    size: Callable[[str], int] = word_count,
    headings: list[tuple[int, str]] | None = None,
) -> tuple[list[Chunk], list[tuple[int, str]]]:
    """The page's chunks, and the heading path after it (pass it to the next page)."""
    path = list(headings or [])
    chunks: list[Chunk] = []
    current: list[Block] = []
    current_path: list[str] = []
    current_size = 0

    def flush() -> None:
        nonlocal current, current_size
        if current:
            chunks.append(Chunk(source, page, current, current_path))
        current, current_size = [], 0

    for block in page.blocks:
        if mode == "block":
            if block.type.is_heading and block.text:
                path = _update_headings(path, block)
            if block.text or block.type is BlockType.FIGURE:
                chunks.append(Chunk(source, page, [block], [h for _, h in path]))
            continue
        if block.type.is_furniture or not (block.text or block.type is BlockType.FIGURE):
            continue
        if block.type.is_heading:
            flush()
            path = _update_headings(path, block)
            current_path = [h for _, h in path]
            current, current_size = [block], size(block.text)
            continue
        n = size(block.text)
        heading_only = len(current) == 1 and current[0].type.is_heading
        if current and current_size + n > max_size and not heading_only:
            flush()
        if current and not _continues(current, block):
            flush()  # a new column or a jump on the page: keep each chunk's box one region
        if block.type in (BlockType.TABLE, BlockType.FIGURE) and current and not heading_only:
            flush()  # tables and figures start their own chunk (with their heading, if it is all there is)
        if not current:
            current_path = [h for _, h in path]
        current.append(block)
        current_size += n
        if block.type in (BlockType.TABLE, BlockType.FIGURE):
            flush()
    flush()
    return chunks, path


def chunk_document(
    document: ParsedDocument,
    *,
    mode: ChunkMode = "chunk",
    max_size: int = 256,
    size: Callable[[str], int] = word_count,
) -> Iterator[Chunk]:
    """Every chunk of the document, page after page, headings carried across pages."""
    path: list[tuple[int, str]] = []
    for page in document.pages:
        chunks, path = chunk_page(document.source, page, mode=mode, max_size=max_size, size=size, headings=path)
        yield from chunks
