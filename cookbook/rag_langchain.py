"""RAG over scanned PDFs with LangChain: layout-aware chunks in a vector store, retriever | prompt | ChatQwenVL,
and an answer that cites page and box.

    python cookbook/rag_langchain.py [--model ...] [--pdf scans.pdf] [--question "..."] [--backend auto|vlm|ocr]

Chunks come from QwenVLDocumentLoader (text layer, VLM or OCR; `--backend ocr` needs no GPU), embeddings from a
local MiniLM model, the store is Qdrant in memory. Each retrieved chunk is numbered, so the answer's [n] points
at a page and a box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from _shared import SAMPLE_SCAN, engine_for, minilm_path, parse_args
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from langchain_qwenvl import ChatQwenVL, QwenVLDocumentLoader

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer from the numbered excerpts only and cite them like [1]. If they do not say, say so."),
        ("user", "{context}\n\nQuestion: {question}"),
    ]
)


class MiniLM(Embeddings):
    """all-MiniLM-L6-v2 through sentence-transformers, on the CPU."""

    def __init__(self) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(minilm_path(), device="cpu")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.model.encode(texts, normalize_embeddings=True).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def number(docs: list[Document]) -> str:
    """The excerpts as the model sees them: '[n] (page p) text'."""
    return "\n\n".join(f"[{i}] (page {d.metadata['page']}) {d.page_content}" for i, d in enumerate(docs, 1))


def main(argv: Sequence[str] | None = None, engine: Any = None) -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--pdf", default=str(SAMPLE_SCAN))
        p.add_argument("--question", default="What is the total of the Results row?")
        p.add_argument("--backend", default="ocr", choices=["auto", "vlm", "ocr"])

    args = parse_args(__doc__.splitlines()[0], argv, extra)
    from langchain_qdrant import QdrantVectorStore

    engine, owned = engine_for(args, engine)
    try:
        docs = QwenVLDocumentLoader(args.pdf, engine=engine, backend=args.backend, mode="chunk", max_size=120).load()
        store = QdrantVectorStore.from_documents(docs, MiniLM(), location=":memory:", collection_name="scans")
        retriever = store.as_retriever(search_kwargs={"k": 3})
        llm = ChatQwenVL(engine=engine, max_tokens=160)
        retrieved = retriever.invoke(args.question)
        chain = (
            {"context": RunnableLambda(lambda _: number(retrieved)), "question": RunnablePassthrough()}
            | PROMPT
            | llm
            | StrOutputParser()
        )
        answer = chain.invoke(args.question)
        print(answer, "\n\nSources:")
        for i, d in enumerate(retrieved, 1):
            m = d.metadata
            print(
                f"[{i}] {m['source']} page {m['page']} box ({m['x0']:.0f}, {m['y0']:.0f}, {m['x1']:.0f}, "
                f"{m['y1']:.0f}) {m['block_type']} under '{m['headings']}'"
            )
        return {"answer": answer, "sources": [d.metadata for d in retrieved]}
    finally:
        if owned:
            engine.close()


if __name__ == "__main__":
    main()
