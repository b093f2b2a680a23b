"""Exports of a parsed document: Markdown, and JSON lines of blocks with flat metadata."""

from __future__ import annotations

import html
import json
import logging
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Literal

from qwenvl._lazy import require
from qwenvl.errors import DocumentError
from qwenvl.layout.model import Block, BlockType, Page, ParsedDocument

_log = logging.getLogger(__name__)

__all__ = [
    "PARQUET_COLUMNS",
    "PageRecord",
    "block_metadata",
    "html_table_rows",
    "iter_block_records",
    "page_records",
    "readable_documents",
    "stable_id",
    "to_markdown",
    "write_blocks_parquet",
]


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


def block_markdown(block: Block) -> str:
    """One block as Markdown."""
    text = block.text.strip()
    if block.type is BlockType.TITLE:
        return f"# {text}"
    if block.type is BlockType.SECTION_HEADER:
        return "#" * min(6, max(2, block.level or 2)) + f" {text}"
    if block.type is BlockType.TABLE:
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


def block_metadata(source: str, page: Page, block: Block) -> dict[str, str | int | float]:
    """Flat, JSON-safe metadata of a block (what vector stores accept)."""
    meta: dict[str, str | int | float] = {
        "source": source,
        "page": page.number,
        "block_id": block.id,
        "block_type": block.type.value,
        "reading_order": block.reading_order,
        "x0": round(block.bbox.x0, 2),
        "y0": round(block.bbox.y0, 2),
        "x1": round(block.bbox.x1, 2),
        "y1": round(block.bbox.y1, 2),
        "page_width": page.width,
        "page_height": page.height,
        "dpi": page.dpi,
        "origin": block.origin,
        "page_status": page.status,
    }
    if block.confidence is not None:
        meta["confidence"] = round(block.confidence, 4)
    if block.level is not None:
        meta["heading_level"] = block.level
    return meta


def iter_block_records(document: ParsedDocument) -> Iterator[dict[str, object]]:
    """One JSON-ready record per block (text, html and the flat metadata), for JSONL output."""
    for page, block in document.blocks():
        record: dict[str, object] = {"text": block.text, **block_metadata(document.source, page, block)}
        if block.html:
            record["html"] = block.html
        yield record


def dumps_records(document: ParsedDocument) -> str:
    """The document's blocks as JSON lines."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in iter_block_records(document))


#: the columns of `write_blocks_parquet`, in order (optional fields are null where a block has none)
PARQUET_COLUMNS = (
    "source", "page", "block_id", "block_type", "reading_order", "text", "html", "x0", "y0", "x1", "y1",
    "page_width", "page_height", "dpi", "origin", "page_status", "confidence", "heading_level",
)  # fmt: skip


def write_blocks_parquet(document: ParsedDocument, path: str | os.PathLike[str]) -> Path:
    """Writes the document's blocks as one Parquet file (the columns of `PARQUET_COLUMNS`, one row per block);
    a folder of such files is a dataset for Ray Data (`ray.data.read_parquet`), Spark or pandas."""
    pa = require("pyarrow", "ray")
    pq = require("pyarrow.parquet", "ray")
    records = list(iter_block_records(document))
    types = {
        "page": pa.int32(), "reading_order": pa.int32(), "page_width": pa.int32(), "page_height": pa.int32(),
        "heading_level": pa.int32(), "x0": pa.float64(), "y0": pa.float64(), "x1": pa.float64(),
        "y1": pa.float64(), "dpi": pa.float64(), "confidence": pa.float64(),
    }  # fmt: skip
    schema = pa.schema([(name, types.get(name, pa.string())) for name in PARQUET_COLUMNS])
    table = pa.Table.from_pydict({name: [r.get(name) for r in records] for name in PARQUET_COLUMNS}, schema=schema)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, out)
    return out


def stable_id(name: str) -> str:
    """A UUID derived from ``name``: the same page or block gets the same id on every run (vector stores such as
    Qdrant take only UUIDs or integers)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


@dataclass(frozen=True)
class PageRecord:
    """One page as the loaders hand it to a framework: a stable id, its Markdown and flat, JSON-safe metadata."""

    id: str
    text: str
    metadata: dict[str, str | int | float]
    page: Page


def page_records(document: ParsedDocument) -> Iterator[PageRecord]:
    """A `PageRecord` per page of ``document``, in order; a failed page says so in ``page_status`` /
    ``page_error``, never silently empty."""
    for page in document.pages:
        meta: dict[str, str | int | float] = {
            "source": document.source,
            "page": page.number,
            "page_width": page.width,
            "page_height": page.height,
            "dpi": page.dpi,
            "page_status": page.status,
            "backend": page.backend,
            "block_count": len(page.blocks),
        }
        if page.error:
            meta["page_error"] = page.error
        if page.text_layer_rejected:
            meta["text_layer_rejected"] = page.text_layer_rejected
        text = to_markdown(ParsedDocument(source=document.source, pages=[page]), page_breaks=False).strip()
        yield PageRecord(stable_id(f"{document.source}#page={page.number}"), text, meta, page)


def readable_documents(
    documents: Iterable[ParsedDocument], on_error: Literal["raise", "warn"] = "raise"
) -> Iterator[ParsedDocument]:
    """The documents that could be opened (their failed pages logged). One that could not raises its
    `DocumentError` (``on_error="raise"``) or is logged and skipped (``"warn"``)."""
    for document in documents:
        if document.error is None:
            for page in document.pages:
                if page.status == "failed":
                    _log.warning("%s page %d failed: %s", document.source, page.number, page.error)
            yield document
        elif on_error == "raise":
            raise DocumentError(document.error, document.source)
        else:
            _log.warning("skipping %s: %s", document.source, document.error)
