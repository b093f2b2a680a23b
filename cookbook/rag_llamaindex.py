"""RAG over scanned PDFs with LlamaIndex: QwenVLReader pages, LayoutNodeParser nodes, a VectorStoreIndex, and a
query engine on QwenVL whose source nodes carry page and box.

    python cookbook/rag_llamaindex.py [--model ...] [--pdf scans.pdf] [--question "..."] [--backend ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from _shared import SAMPLE_SCAN, engine_for, minilm_path, parse_args
from llama_index.core import VectorStoreIndex
from llama_index.embeddings.huggingface import HuggingFaceEmbedding

from llama_index.llms.qwenvl import QwenVL
from llama_index.readers.qwenvl import LayoutNodeParser, QwenVLReader


def main(argv: Sequence[str] | None = None, engine: Any = None) -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--pdf", default=str(SAMPLE_SCAN))
        p.add_argument("--question", default="Which items are listed in the table?")
        p.add_argument("--backend", default="ocr", choices=["auto", "vlm", "ocr"])

    args = parse_args(__doc__.splitlines()[0], argv, extra)
    engine, owned = engine_for(args, engine)
    try:
        pages = QwenVLReader(engine=engine, backend=args.backend).load_data(args.pdf)
        nodes = LayoutNodeParser(chunk_size=120).get_nodes_from_documents(pages)
        index = VectorStoreIndex(nodes, embed_model=HuggingFaceEmbedding(model_name=minilm_path(), device="cpu"))
        query_engine = index.as_query_engine(llm=QwenVL(engine=engine, max_tokens=160), similarity_top_k=3)
        response = query_engine.query(args.question)
        print(response.response, "\n\nSources:")
        for i, hit in enumerate(response.source_nodes, 1):
            m = hit.node.metadata
            print(
                f"[{i}] page {m['page']} box ({m['x0']:.0f}, {m['y0']:.0f}, {m['x1']:.0f}, {m['y1']:.0f}) "
                f"{m['block_type']} score {hit.score:.3f}"
            )
        return {"answer": response.response, "sources": [h.node.metadata for h in response.source_nodes]}
    finally:
        if owned:
            engine.close()


if __name__ == "__main__":
    main()
