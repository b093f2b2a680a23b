"""The LangChain document loader and blob parser, and its Documents in a real vector store (Qdrant local mode)
with a real local embedding model."""

from __future__ import annotations

from pathlib import Path

import pytest

FLAT = (str, int, float)


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
