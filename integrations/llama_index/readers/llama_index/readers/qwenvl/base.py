"""LlamaIndex reader (a Document per page, the layout in metadata) and LayoutNodeParser (a node per block or
chunk of blocks, with boxes, heading path and relationships)."""

from __future__ import annotations

import base64
import io
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.node_parser import NodeParser
from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import BaseNode, Document, ImageNode, NodeRelationship, TextNode

from qwenvl.layout import DocumentParser, Page, ParsedDocument, crop, export, render_page
from qwenvl.layout.chunking import chunk_page, word_count
from qwenvl.layout.export import page_records, readable_documents

__all__ = ["LAYOUT_KEY", "LayoutNodeParser", "QwenVLReader"]

_log = logging.getLogger(__name__)

#: The metadata key holding a page's layout (its blocks as JSON); kept out of embeddings and LLM prompts.
LAYOUT_KEY = "layout_json"
#: Metadata that locates a node but means nothing to an embedding model or an LLM.
LOCATION_KEYS = [LAYOUT_KEY, *export.LOCATION_KEYS]


class QwenVLReader(BaseReader):
    """Reads PDFs, TIFFs and images into one Document per page: the page's Markdown as text, its layout (blocks
    with type, box, text, reading order) as JSON in ``metadata["layout_json"]``.

    Give a configured ``parser``, or ``engine`` / ``backend`` and `DocumentParser` keyword arguments.

    Example:
        .. code-block:: python

            from llama_index.readers.qwenvl import LayoutNodeParser, QwenVLReader

            pages = QwenVLReader(backend="ocr").load_data("scans/")
            nodes = LayoutNodeParser(chunk_size=256).get_nodes_from_documents(pages)
    """

    def __init__(
        self,
        parser: DocumentParser | None = None,
        *,
        engine: Any = None,
        backend: Literal["auto", "vlm", "ocr"] = "auto",
        on_error: Literal["raise", "warn"] = "raise",
        **parser_kwargs: Any,
    ) -> None:
        self.parser = parser or DocumentParser(engine, backend, **parser_kwargs)
        self.on_error = on_error

    def lazy_load_data(  # type: ignore[override]
        self,
        file_path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        extra_info: dict[str, Any] | None = None,
    ) -> Iterable[Document]:
        """A Document per page of every file (a path, folder, glob or list), file after file."""
        for parsed in readable_documents(self.parser.parse_many(file_path), self.on_error):
            yield from page_documents(parsed, extra_info)


def page_documents(parsed: ParsedDocument, extra_info: dict[str, Any] | None = None) -> Iterable[Document]:
    """One LlamaIndex Document per page of a parsed document."""
    for record in page_records(parsed):
        metadata: dict[str, Any] = {**(extra_info or {}), **record.metadata, LAYOUT_KEY: record.page.model_dump_json()}
        yield Document(
            id_=record.id,
            text=record.text,
            metadata=metadata,
            excluded_embed_metadata_keys=[*LOCATION_KEYS, *export.PAGE_REPORT_KEYS],
            excluded_llm_metadata_keys=[*LOCATION_KEYS, *export.PAGE_REPORT_KEYS],
        )


class LayoutNodeParser(NodeParser):
    """Page Documents from `QwenVLReader` into nodes: a TextNode per block (``mode="block"``) or blocks merged up
    to ``chunk_size`` (``mode="chunk"``; a table is never split, chunks never cross pages), each with its page,
    box, block type, reading order and heading path; figures as ImageNodes holding the cropped region.

    Relationships: SOURCE and PARENT are the page Document; PREVIOUS / NEXT link the nodes of one file in order,
    across pages. Location keys are excluded from embedding and LLM text.
    """

    mode: Literal["block", "chunk"] = Field(default="chunk", description="'block' or 'chunk'")
    chunk_size: int = Field(default=256, description="Largest chunk, in units of `size_fn` (words by default)")
    include_figures: bool = Field(default=True, description="Figures as ImageNodes with the page crop")
    _size_fn: Callable[[str], int] | None = PrivateAttr(default=None)

    def __init__(self, *, size_fn: Callable[[str], int] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._size_fn = size_fn

    @classmethod
    def class_name(cls) -> str:
        """The serialization name."""
        return "LayoutNodeParser"

    def _parse_nodes(self, nodes: Sequence[BaseNode], show_progress: bool = False, **kwargs: Any) -> list[BaseNode]:
        out: list[BaseNode] = []
        headings: dict[str, list[tuple[int, str]]] = {}
        for node in nodes:
            raw = node.metadata.get(LAYOUT_KEY)
            if raw is None:
                raise ValueError(
                    f"node {node.node_id} has no {LAYOUT_KEY!r} metadata: LayoutNodeParser reads the page Documents "
                    "of QwenVLReader"
                )
            page = Page.model_validate_json(raw)
            source = str(node.metadata.get("source", ""))
            chunks, headings[source] = chunk_page(
                source,
                page,
                mode=self.mode,
                max_size=self.chunk_size,
                size=self._size_fn or word_count,
                headings=headings.get(source),
            )
            page_image = None
            for chunk in chunks:
                metadata = chunk.metadata()
                figure = len(chunk.blocks) == 1 and chunk.blocks[0].type.value == "figure"
                if figure and self.include_figures and chunk.bbox is not None:
                    if page_image is None:
                        page_image = render_page(source, page.number, page.dpi)
                    buf = io.BytesIO()
                    crop(page_image, chunk.bbox, padding=0).save(buf, "PNG")
                    new: TextNode = ImageNode(
                        image=base64.b64encode(buf.getvalue()).decode(),
                        image_mimetype="image/png",
                        text=chunk.text,
                        metadata=metadata,
                    )
                elif figure:
                    continue
                else:
                    new = TextNode(text=chunk.text, metadata=metadata)
                new.excluded_embed_metadata_keys = list(LOCATION_KEYS)
                new.excluded_llm_metadata_keys = list(LOCATION_KEYS)
                new.relationships[NodeRelationship.SOURCE] = node.as_related_node_info()
                new.relationships[NodeRelationship.PARENT] = node.as_related_node_info()
                out.append(new)
        return out

    def _postprocess_parsed_nodes(self, nodes: list[BaseNode], parent_doc_map: dict[str, Document]) -> list[BaseNode]:
        nodes = super()._postprocess_parsed_nodes(nodes, parent_doc_map)
        for node in nodes:
            node.metadata.pop(LAYOUT_KEY, None)  # the whole page's layout does not belong on each node
            node.relationships.pop(NodeRelationship.PREVIOUS, None)
            node.relationships.pop(NodeRelationship.NEXT, None)
        if self.include_prev_next_rel:
            for prev, nxt in zip(nodes, nodes[1:], strict=False):
                if prev.metadata.get("source") == nxt.metadata.get("source"):
                    prev.relationships[NodeRelationship.NEXT] = nxt.as_related_node_info()
                    nxt.relationships[NodeRelationship.PREVIOUS] = prev.as_related_node_info()
        return nodes
