"""LangChain document loader and blob parser over `qwenvl.layout.DocumentParser`."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_core.document_loaders import BaseBlobParser, BaseLoader
from langchain_core.documents import Document
from langchain_core.documents.base import Blob

from qwenvl.errors import LayoutError
from qwenvl.layout import DocumentParser, ParsedDocument
from qwenvl.layout.chunking import chunk_document, word_count
from qwenvl.layout.export import page_records, readable_documents, stable_id

__all__ = ["QwenVLBlobParser", "QwenVLDocumentLoader", "to_documents"]

_log = logging.getLogger(__name__)

Mode = Literal["block", "chunk", "page"]


def to_documents(
    parsed: ParsedDocument,
    *,
    mode: Mode = "chunk",
    max_size: int = 256,
    size: Callable[[str], int] = word_count,
) -> Iterator[Document]:
    """LangChain Documents of a parsed document: one per block, per chunk of blocks (up to ``max_size``, tables
    whole), or per page (Markdown). Metadata is flat: source, page, x0/y0/x1/y1, page_width/page_height,
    block_type, reading_order, headings, ..."""
    if mode == "page":
        for record in page_records(parsed):
            yield Document(page_content=record.text, metadata=dict(record.metadata), id=record.id)
        return
    if mode not in ("block", "chunk"):
        raise LayoutError(f"mode={mode!r}: use 'block', 'chunk' or 'page'")
    for chunk in chunk_document(parsed, mode=mode, max_size=max_size, size=size):
        meta = chunk.metadata()
        yield Document(page_content=chunk.text, metadata=meta, id=stable_id(f"{parsed.source}#{meta['block_id']}"))


class QwenVLDocumentLoader(BaseLoader):
    """Loads PDFs, TIFFs and images as layout-aware Documents (see `qwenvl.layout.DocumentParser`).

    ``file_path``: a path, folder, glob pattern or list of them. ``parser``: a configured `DocumentParser`;
    else one is built from ``engine``, ``backend`` and ``parser_kwargs``. ``mode``: "chunk" (blocks merged up to
    ``max_size`` words, tables whole), "block" or "page". ``on_error``: "raise" on a document that cannot be
    opened, or "warn" to log it and go on with the others.

    Example:
        .. code-block:: python

            from langchain_qwenvl import QwenVLDocumentLoader

            docs = QwenVLDocumentLoader("scans/*.pdf", backend="ocr").load()
            docs[0].metadata["page"], docs[0].metadata["x0"], docs[0].metadata["block_type"]
    """

    def __init__(
        self,
        file_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        parser: DocumentParser | None = None,
        engine: Any = None,
        backend: Literal["auto", "vlm", "ocr"] = "auto",
        mode: Mode = "chunk",
        max_size: int = 256,
        size: Callable[[str], int] = word_count,
        on_error: Literal["raise", "warn"] = "raise",
        **parser_kwargs: Any,
    ) -> None:
        self.file_path = [file_path] if isinstance(file_path, str | os.PathLike) else list(file_path)
        self.parser = parser or DocumentParser(engine, backend, **parser_kwargs)
        self.mode = mode
        self.max_size = max_size
        self.size = size
        self.on_error = on_error

    def lazy_load(self) -> Iterator[Document]:
        """Documents, file after file, as each file's pages are parsed."""
        for parsed in readable_documents(self.parser.parse_many(self.file_path), self.on_error):
            yield from to_documents(parsed, mode=self.mode, max_size=self.max_size, size=self.size)


class QwenVLBlobParser(BaseBlobParser):
    """A blob parser for LangChain's blob loaders (``GenericLoader``): each blob is a PDF, TIFF or image."""

    def __init__(
        self,
        *,
        parser: DocumentParser | None = None,
        engine: Any = None,
        backend: Literal["auto", "vlm", "ocr"] = "auto",
        mode: Mode = "chunk",
        max_size: int = 256,
        **parser_kwargs: Any,
    ) -> None:
        self.parser = parser or DocumentParser(engine, backend, **parser_kwargs)
        self.mode = mode
        self.max_size = max_size

    def lazy_parse(self, blob: Blob) -> Iterator[Document]:
        """Documents of one blob; its ``source`` (or path) names them."""
        name = str(blob.source or blob.path or "<blob>")
        data = blob.as_bytes() if blob.data is not None or blob.path is None else Path(str(blob.path)).read_bytes()
        parsed = self.parser.parse(data, name=name)
        yield from to_documents(parsed, mode=self.mode, max_size=self.max_size)
