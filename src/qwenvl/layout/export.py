"""Exports of a parsed document: JSON lines and Parquet of blocks with flat metadata, and page records (the
Markdown form, `to_markdown`, is the model's own and is re-exported here)."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from qwenvl._lazy import require
from qwenvl.errors import DocumentError
from qwenvl.layout.model import (
    Block,
    Page,
    ParsedDocument,
    block_markdown,
    html_table_rows,
    rows_to_html,
    to_markdown,
)

_log = logging.getLogger(__name__)

__all__ = [
    "LOCATION_KEYS",
    "PAGE_REPORT_KEYS",
    "PARQUET_COLUMNS",
    "PageRecord",
    "block_markdown",
    "block_metadata",
    "html_table_rows",
    "iter_block_records",
    "page_records",
    "readable_documents",
    "rows_to_html",
    "stable_id",
    "to_markdown",
    "write_blocks_parquet",
]


#: the metadata keys (of `block_metadata`, `page_records` and chunks) that locate a block or page or say how it
#: was read, and mean nothing to an embedding model or an LLM: the loaders keep them out of both
LOCATION_KEYS = (
    "x0", "y0", "x1", "y1", "boxed", "page_width", "page_height", "dpi", "block_id", "block_types",
    "reading_order", "origin", "page_status", "confidence", "backend", "heading_level",
)  # fmt: skip
#: page metadata about the reading itself (a failed page's error, how many blocks it has): kept out of a page's
#: embedding and prompt as well
PAGE_REPORT_KEYS = ("page_error", "block_count", "text_layer_rejected")


def block_metadata(source: str, page: Page, block: Block) -> dict[str, str | int | float]:
    """Flat, JSON-safe metadata of a block (what vector stores accept)."""
    meta: dict[str, str | int | float] = {
        "source": source,
        "page": page.number,
        "block_id": block.id,
        "block_type": block.type.value,
        "reading_order": block.reading_order,
        "page_width": page.width,
        "page_height": page.height,
        "dpi": page.dpi,
        "origin": block.origin,
        "page_status": page.status,
    }
    if block.bbox is not None:
        meta.update({k: round(v, 2) for k, v in zip(("x0", "y0", "x1", "y1"), block.bbox.xyxy, strict=True)})
    else:  # the backend could not place the block on the page: no box, and a flag saying so
        meta["boxed"] = 0
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
