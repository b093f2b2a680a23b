"""The VLM backend through the real vLLM engine on the tiny model: schema-valid blocks, batching across
documents, tiling and fallback when answers are cut off, retries, the cache after an interruption."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest

from qwenvl import ChatRequest, ChatResult, image_tokens
from qwenvl.errors import EngineError
from qwenvl.layout import BlockType, DocumentParser
from qwenvl_testkit.synthetic_pages import make_pages, write_digital_pdf, write_pdf

pytestmark = pytest.mark.engine

SMALL = 64 * 28 * 28
# Bounds that let a random model finish its JSON: the schema is what is under test, not the words.
VLM_ARGS: dict[str, Any] = {
    "max_pixels": SMALL,
    "max_tokens": 512,
    "min_blocks": 2,
    "max_blocks": 4,
    "max_text_chars": 24,
}


class Recorder:
    """The real engine, with its calls recorded; optionally failing some requests or interrupting a call."""

    def __init__(self, engine: Any, *, fail_first: int = 0, interrupt_on_call: int | None = None) -> None:
        self.engine = engine
        self.calls: list[int] = []
        self.fail_first = fail_first
        self.interrupt_on_call = interrupt_on_call

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    @property
    def defaults(self) -> Any:
        return self.engine.defaults

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        self.calls.append(len(requests))
        if self.interrupt_on_call == len(self.calls):
            raise KeyboardInterrupt
        results = self.engine.generate(requests)
        for result in results[: self.fail_first]:
            result.error = EngineError("injected failure")
        self.fail_first = max(0, self.fail_first - len(results))
        return results


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("vlm-docs")
    pages = make_pages(6, seed=40)
    a = write_pdf([p.image for p in pages[:2]], folder / "a.pdf")
    b = write_pdf([p.image for p in pages[2:5]], folder / "b.pdf")
    c = folder / "c.png"
    pages[5].image.save(c)
    digital = folder / "digital.pdf"
    write_digital_pdf(digital, pages=1)
    mixed = pdfium.PdfDocument.new()
    mixed.import_pages(pdfium.PdfDocument(str(digital)), [0])
    mixed.import_pages(pdfium.PdfDocument(str(a)), [0])
    mixed.save(str(folder / "mixed.pdf"))
    return {"a": a, "b": b, "c": c, "mixed": folder / "mixed.pdf", "folder": folder}


def _check_blocks(doc: Any, max_chars: int) -> None:
    for page in doc.pages:
        assert page.status == "ok" and page.backend == "vlm", page.error
        assert 2 <= len(page.blocks) <= 4
        for i, block in enumerate(page.blocks):
            assert block.reading_order == i and block.id == f"p{page.number}-b{i}"
            assert isinstance(block.type, BlockType) and block.origin == "vlm"
            assert 0 <= block.bbox.x0 <= block.bbox.x1 <= page.width
            assert 0 <= block.bbox.y0 <= block.bbox.y1 <= page.height
            assert len(block.text) <= max_chars or block.type is BlockType.TABLE


def test_pages_of_several_documents_share_one_engine_call(vllm_engine: Any, docs: dict[str, Path]) -> None:
    engine = Recorder(vllm_engine)
    parser = DocumentParser(engine, backend="vlm", fallback=False, **VLM_ARGS)
    out = list(parser.parse_many([docs["a"], docs["b"], docs["c"]]))
    assert engine.calls == [6]  # 2 + 3 + 1 pages, one batch
    assert [len(d.pages) for d in out] == [2, 3, 1]
    for doc in out:
        _check_blocks(doc, VLM_ARGS["max_text_chars"])
        for page in doc.pages:
            # each page was rendered to fill the pixel budget, and cost what image_tokens() says
            assert page.usage.requests == 1
            assert page.usage.image_tokens == image_tokens(page.width, page.height, max_pixels=SMALL)
    pdf_page = out[0].pages[0]
    assert pdf_page.width * pdf_page.height <= SMALL * 1.05 and pdf_page.dpi < 72


def test_cut_off_pages_are_tiled_then_fall_back_never_truncated(vllm_engine: Any, docs: dict[str, Path]) -> None:
    engine = Recorder(vllm_engine)
    args = {**VLM_ARGS, "max_tokens": 12, "max_tile_depth": 1}
    doc = DocumentParser(engine, backend="vlm", **args).parse(docs["c"])
    (page,) = doc.pages
    assert engine.calls == [1, 2]  # the page, then its two halves
    assert page.status == "fallback" and page.backend == "ocr" and page.usage.requests == 3
    assert "max_tokens=12" in (page.error or "") and page.blocks and page.blocks[0].origin == "ocr"
    failed = DocumentParser(vllm_engine, backend="vlm", fallback=False, **args).parse(docs["c"]).pages[0]
    assert failed.status == "failed" and failed.blocks == [] and "max_tokens" in (failed.error or "")


def test_engine_errors_are_retried(vllm_engine: Any, docs: dict[str, Path]) -> None:
    engine = Recorder(vllm_engine, fail_first=1)
    doc = DocumentParser(engine, backend="vlm", retries=1, fallback=False, **VLM_ARGS).parse(docs["a"])
    assert engine.calls == [2, 1]  # both pages, then the failed one again
    assert [p.usage.requests for p in doc.pages] == [2, 1]
    _check_blocks(doc, VLM_ARGS["max_text_chars"])
    engine = Recorder(vllm_engine, fail_first=2)
    doc = DocumentParser(engine, backend="vlm", retries=0, fallback=False, **VLM_ARGS).parse(docs["a"])
    assert [p.status for p in doc.pages] == ["failed", "failed"]
    assert all("injected failure" in (p.error or "") for p in doc.pages)


def test_auto_reads_the_text_layer_and_sends_only_scans(vllm_engine: Any, docs: dict[str, Path]) -> None:
    engine = Recorder(vllm_engine)
    doc = DocumentParser(engine, backend="auto", fallback=False, **VLM_ARGS).parse(docs["mixed"])
    assert [p.backend for p in doc.pages] == ["pdf_text", "vlm"]
    assert engine.calls == [1]


def test_fifty_pages_interrupted_then_resumed(vllm_engine: Any, tmp_path: Path) -> None:
    pages = make_pages(5, seed=60)
    images = [pages[i % 5].image.resize((425, 550)) for i in range(50)]
    path = write_pdf(images, tmp_path / "fifty.pdf", dpi=50)
    cache = tmp_path / "cache"
    engine = Recorder(vllm_engine, interrupt_on_call=3)
    parser = DocumentParser(engine, backend="vlm", batch_size=10, cache_dir=cache, fallback=False, **VLM_ARGS)
    with pytest.raises(KeyboardInterrupt):
        parser.parse(path)
    assert engine.calls == [10, 10, 10] and len(parser.cache or []) == 20  # two batches finished and kept
    engine = Recorder(vllm_engine)
    doc = DocumentParser(engine, backend="vlm", batch_size=10, cache_dir=cache, fallback=False, **VLM_ARGS).parse(path)
    assert sum(engine.calls) == 30  # only the unfinished pages went to the engine
    assert len(doc.pages) == 50 and [p.number for p in doc.pages] == list(range(1, 51))
    _check_blocks(doc, VLM_ARGS["max_text_chars"])


def test_server_engine_gives_the_same_layout(vllm_engine: Any, server_engine: Any, docs: dict[str, Path]) -> None:
    local = DocumentParser(vllm_engine, backend="vlm", fallback=False, **VLM_ARGS).parse(docs["c"])
    remote = DocumentParser(server_engine, backend="vlm", fallback=False, **VLM_ARGS).parse(docs["c"])
    assert remote.pages[0].blocks == local.pages[0].blocks
    assert remote.pages[0].usage == local.pages[0].usage
