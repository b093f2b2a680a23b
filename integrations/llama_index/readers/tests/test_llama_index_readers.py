"""The LlamaIndex reader and LayoutNodeParser, and their nodes in a real vector store (Qdrant local mode) with a
real local embedding model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image as PILImage

from qwenvl.layout import BBox, Block, BlockType, Page, ParsedDocument

FLAT = (str, int, float)


def test_llama_index_reader_and_node_parser(scan: Path) -> None:
    from llama_index.core.schema import NodeRelationship, TextNode

    from llama_index.readers.qwenvl import LAYOUT_KEY, LayoutNodeParser, QwenVLReader

    pages = QwenVLReader(backend="ocr").load_data(scan)
    assert [p.metadata["page"] for p in pages] == [1, 2, 3]
    layout = json.loads(pages[1].metadata[LAYOUT_KEY])
    assert any(b["type"] == "table" and b["html"] for b in layout["blocks"])
    assert LAYOUT_KEY in pages[0].excluded_embed_metadata_keys
    assert "layout_json" not in pages[0].get_metadata_str(mode="embed")
    nodes = LayoutNodeParser(mode="block").get_nodes_from_documents(pages)
    assert len(nodes) == sum(len(json.loads(p.metadata[LAYOUT_KEY])["blocks"]) for p in pages)
    for node in nodes:
        assert isinstance(node, TextNode) and LAYOUT_KEY not in node.metadata
        assert all(isinstance(v, FLAT) for v in node.metadata.values())
        rel = node.relationships
        assert rel[NodeRelationship.SOURCE].node_id == rel[NodeRelationship.PARENT].node_id
        embed_text = node.get_content(metadata_mode="embed")
        assert "x0" not in embed_text and "page_width" not in embed_text
    # PREVIOUS / NEXT run through the whole file, across pages
    assert NodeRelationship.PREVIOUS not in nodes[0].relationships
    assert NodeRelationship.NEXT not in nodes[-1].relationships
    for prev, nxt in zip(nodes, nodes[1:], strict=False):
        assert prev.relationships[NodeRelationship.NEXT].node_id == nxt.node_id
        assert nxt.relationships[NodeRelationship.PREVIOUS].node_id == prev.node_id
    page_of = {p.doc_id: p.metadata["page"] for p in pages}
    assert all(page_of[n.relationships[NodeRelationship.PARENT].node_id] == n.metadata["page"] for n in nodes)
    chunks = LayoutNodeParser(mode="chunk", chunk_size=80).get_nodes_from_documents(pages)
    assert len(chunks) < len(nodes)
    table = [n for n in chunks if n.metadata["block_type"] == "table"]
    assert len(table) == 1 and table[0].metadata["headings"]  # the page's title is its heading
    with pytest.raises(ValueError, match="layout_json"):
        from llama_index.core import Document

        LayoutNodeParser().get_nodes_from_documents([Document(text="plain")])


def test_llama_index_figures_become_image_nodes(tmp_path: Path) -> None:
    import base64
    import io

    from llama_index.core.schema import ImageNode

    from llama_index.readers.qwenvl import LayoutNodeParser
    from llama_index.readers.qwenvl.base import page_documents

    image = PILImage.new("RGB", (400, 300), "white")
    image.paste((200, 30, 30), (100, 50, 300, 150))
    path = tmp_path / "figure.png"
    image.save(path)
    page = Page(
        number=1,
        width=400,
        height=300,
        dpi=200,
        blocks=[
            Block(
                id="p1-b0",
                type=BlockType.FIGURE,
                bbox=BBox.of(100, 50, 300, 150),
                text="",
                reading_order=0,
                origin="vlm",
            ),
            Block(
                id="p1-b1",
                type=BlockType.CAPTION,
                bbox=BBox.of(100, 160, 300, 180),
                text="Figure 1: red",
                reading_order=1,
                origin="vlm",
            ),
        ],
    )
    docs = list(page_documents(ParsedDocument(source=str(path), pages=[page])))
    nodes = LayoutNodeParser(mode="block").get_nodes_from_documents(docs)
    assert isinstance(nodes[0], ImageNode)
    crop = PILImage.open(io.BytesIO(base64.b64decode(nodes[0].image or "")))
    assert crop.size == (200, 100) and crop.getpixel((100, 50)) == (200, 30, 30)
    assert nodes[1].get_content() == "Figure 1: red"


def test_llama_index_nodes_in_a_qdrant_vector_store(scan: Path, minilm: str) -> None:
    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    from llama_index.readers.qwenvl import LayoutNodeParser, QwenVLReader

    pages = QwenVLReader(backend="ocr").load_data(scan)
    nodes = LayoutNodeParser(mode="chunk", chunk_size=80).get_nodes_from_documents(pages)
    store = QdrantVectorStore(client=QdrantClient(location=":memory:"), collection_name="scans")
    index = VectorStoreIndex(
        nodes,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=HuggingFaceEmbedding(model_name=minilm, device="cpu"),
    )
    target = next(n for n in nodes if n.metadata["block_type"] == "table")
    hit = index.as_retriever(similarity_top_k=1).retrieve(target.get_content())[0]
    assert hit.node.node_id == target.node_id
    for key in ("page", "x0", "y1", "block_type", "headings", "source"):
        assert hit.node.metadata[key] == target.metadata[key]
