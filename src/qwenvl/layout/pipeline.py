"""DocumentParser: documents in, `ParsedDocument` out, pages of many documents batched through one engine."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tqdm.auto import tqdm

from qwenvl.errors import LayoutError, PageLimitError, QwenVLError
from qwenvl.layout import olmocr
from qwenvl.layout.model import SCHEMA_VERSION, Block, BlockType, Page, PageUsage, ParsedDocument
from qwenvl.layout.ocr import OCREngine, ocr_engine_for, ocr_layout
from qwenvl.layout.options import (
    Backend,
    OCROptions,
    PageOptions,
    ParserOptions,
    RunOptions,
    VLMOptions,
    cache_fingerprint,
)
from qwenvl.layout.pages import DocumentError, DocumentSource, PageSource, dpi_for_budget, expand_sources, open_document
from qwenvl.layout.text_layer import ocr_agreement
from qwenvl.layout.vlm import Tile, blocks_from_result, layout_request, split_tile
from qwenvl.media import MediaPolicy
from qwenvl.models import QWEN2_VL

if TYPE_CHECKING:
    import PIL.Image

    from qwenvl.engine.base import Engine

__all__ = ["Backend", "DocumentParser", "PageCache", "ParserOptions"]

_log = logging.getLogger(__name__)


class PageCache:
    """Finished pages on disk, one JSON file each, keyed by page content and parser settings.

    Files are written atomically as pages finish, so a run that stops (crash, Ctrl-C) keeps its finished pages
    and the next run starts where it stopped. Each file carries its key: an entry that is not the one asked
    for (copied, overwritten, corrupt) is ignored. A folder that cannot be written is a warning, not a crash:
    the run goes on without caching.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.enabled = True
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._disable(exc)

    def _disable(self, exc: OSError) -> None:
        if self.enabled:
            _log.warning("page cache %s is not usable (%s); going on without a cache", self.folder, exc)
            warnings.warn(
                f"qwenvl: the page cache folder {self.folder} is not usable ({exc}); pages are not cached. "
                "Pass another cache_dir (--cache-dir) or none (--no-cache).",
                RuntimeWarning,
                stacklevel=3,
            )
        self.enabled = False

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def get(self, key: str) -> Page | None:
        """The cached page for ``key``, or None (also for an unreadable entry or one of another key)."""
        if not self.enabled:
            return None
        path = self._path(key)
        try:
            entry = json.loads(path.read_bytes())
            if not isinstance(entry, dict) or entry.get("key") != key:
                raise ValueError("the entry belongs to another key")
            return Page.model_validate(entry["page"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log.warning("ignoring unusable cache entry %s (%s)", path, exc)
            return None

    def put(self, key: str, page: Page) -> None:
        """Stores ``page`` under ``key``."""
        if not self.enabled:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(json.dumps({"key": key, "page": page.model_dump(mode="json")}).encode())
            os.replace(tmp, path)
        except OSError as exc:
            self._disable(exc)

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*/*.json")) if self.enabled else 0


@dataclass
class _DocState:
    name: str
    doc: DocumentSource | None
    pages: list[Page | None] = field(default_factory=list)
    error: str | None = None

    def done(self) -> bool:
        return all(p is not None for p in self.pages)


@dataclass
class _Job:
    state: _DocState
    page: PageSource
    key: str
    image: PIL.Image.Image | None = None
    dpi: float = 0.0
    usage: PageUsage = field(default_factory=PageUsage)
    #: why the page's text layer was not used
    rejected: str | None = None


class DocumentParser:
    """Parses PDFs, TIFFs and images into pages of typed, boxed blocks in reading order.

    ``backend``: "auto" reads a PDF page's text layer where it has one, else asks the VLM when an ``engine`` is
    given, else runs OCR; "vlm" and "ocr" force one backend. A page the VLM cannot do (errors after
    ``retries``, an answer still cut off by ``max_tokens`` after tiling, no blocks) falls back to OCR when
    ``fallback`` is on (status "fallback"), else it fails (status "failed"). No page is ever silently empty.

    The engine is given (``engine``) or built here from ``model`` / ``base_url`` / ``engine_options`` through
    `qwenvl.create_engine`. Options may also come as one `ParserOptions` (``options``), nested by concern.

    Pages of all documents go to the engine ``batch_size`` at a time. With ``cache_dir`` finished pages are
    kept on disk and skipped on the next run. ``dpi`` is the resolution for OCR and text-layer pages; VLM pages
    are rendered at the resolution that fills ``max_pixels``. ``lora`` reads pages with a LoRA adapter (a
    domain-tuned model). The VLM's boxes follow its family's convention (``coords="auto"``: pixels for
    Qwen2.5-VL, a 0-1000 grid for Qwen2-VL and Qwen3-VL, from ``engine.profile``); ``layout_format="html"``
    asks for the "QwenVL HTML" Qwen2.5-VL was trained on instead of schema-constrained JSON (the default: every
    answer parses); ``layout_format="olmocr"`` reads pages with olmOCR-2 (its prompt, image size and sampling;
    its markdown becomes typed blocks boxed by the page's words: `qwenvl.layout.olmocr`).
    """

    def __init__(
        self,
        engine: Engine | None = None,
        backend: Backend = "auto",
        *,
        options: ParserOptions | None = None,
        model: str | None = None,
        base_url: str | list[str] | None = None,
        engine_options: dict[str, Any] | None = None,
        lang: str = "eng",
        ocr_engine: str | OCREngine = "auto",
        dpi: float = 200.0,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        max_tokens: int = 4096,
        coords: Literal["auto", "grid", "pixels"] = "auto",
        layout_format: Literal["json", "html", "olmocr"] = "json",
        min_blocks: int = 0,
        max_blocks: int | None = None,
        max_text_chars: int | None = None,
        max_tile_depth: int = 2,
        lora: str | None = None,
        batch_size: int = 32,
        retries: int = 1,
        fallback: bool = True,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool | None = None,
        password: str | None = None,
        ocr_workers: int | None = None,
        policy: MediaPolicy | None = None,
    ) -> None:
        if model is not None or base_url is not None or engine_options:
            from qwenvl.engine.factory import create_engine

            # the engine the documents are read with, built here (an engine given as well raises)
            engine = create_engine(model, base_url, engine, **(engine_options or {}))
        if options is None:
            options = ParserOptions(
                backend=backend,
                pages=PageOptions(dpi=dpi, password=password, policy=policy),
                ocr=OCROptions(lang=lang, engine=ocr_engine, workers=ocr_workers),
                vlm=VLMOptions(
                    min_pixels=min_pixels,
                    max_pixels=max_pixels,
                    max_tokens=max_tokens,
                    coords=coords,
                    format=layout_format,
                    min_blocks=min_blocks,
                    max_blocks=max_blocks,
                    max_text_chars=max_text_chars,
                    max_tile_depth=max_tile_depth,
                    lora=lora,
                ),
                run=RunOptions(batch_size=batch_size, retries=retries, fallback=fallback, progress=progress),
                cache_dir=cache_dir,
            )
        else:
            given = _changed_keywords(locals()) + (["backend"] if backend != "auto" else [])
            if given:
                raise LayoutError(
                    f"DocumentParser got options= and also {', '.join(given)}; put them in the options "
                    "(dataclasses.replace(options.run, batch_size=...)) or drop options=."
                )
        if options.backend not in ("auto", "vlm", "ocr"):
            raise LayoutError(f"backend={options.backend!r}: use 'auto', 'vlm' or 'ocr'")
        if options.backend == "vlm" and engine is None:
            raise LayoutError("backend='vlm' needs an engine: DocumentParser(engine=VLLMEngine(...), backend='vlm')")
        if options.run.batch_size < 1:
            raise LayoutError(f"batch_size={options.run.batch_size}: use 1 or more")
        profile = getattr(engine, "profile", None) or QWEN2_VL  # the engine's family (a stand-in: Qwen2-VL)
        # Pages are sized by the family's one pixel rule under the engine's own defaults, resolved here once,
        # so the engine resizes the page to exactly the size its boxes are mapped back from.
        defaults = getattr(engine, "defaults", None)
        lo, hi = profile.image_limits(
            options.vlm.min_pixels,
            options.vlm.max_pixels,
            default_min=getattr(defaults, "min_pixels", None),
            default_max=getattr(defaults, "max_pixels", None),
        )
        options = replace(options, vlm=replace(options.vlm, min_pixels=lo, max_pixels=hi, family=profile.family))
        if options.vlm.coords == "auto":  # boxes the way the family was trained to write them
            coords = "pixels" if profile.box_convention == "pixels" else "grid"
            options = replace(options, vlm=replace(options.vlm, coords=coords))
        #: the options (frozen: the page-cache key is derived from them, so they cannot drift from it)
        self.options = options
        self.engine = engine
        self._ocr_choice = options.ocr.engine
        self._ocr: OCREngine | None = options.ocr.engine if not isinstance(options.ocr.engine, str) else None
        if self.backend == "ocr":
            self._ocr_engine()  # fail now, not on the first page, when OCR is missing
        self.cache = PageCache(options.cache_dir) if options.cache_dir is not None else None
        self.ocr_workers = options.ocr.workers or min(8, os.cpu_count() or 1)
        #: engine calls made (each a batch), for inspection
        self.engine_calls = 0
        #: pages OCR read only to box olmOCR-2's blocks, and the seconds it took (the cost of boxes on scans)
        self.ocr_pages = 0
        self.ocr_seconds = 0.0

    # the options the pipeline reads, by their short names (read-only views of ``options``)
    backend = property(lambda self: self.options.backend)
    lang = property(lambda self: self.options.ocr.lang)
    vlm = property(lambda self: self.options.vlm)
    dpi = property(lambda self: self.options.pages.dpi)
    password = property(lambda self: self.options.pages.password)
    policy = property(lambda self: self.options.pages.policy)
    limits = property(lambda self: self.options.pages.limits)
    batch_size = property(lambda self: self.options.run.batch_size)
    retries = property(lambda self: self.options.run.retries)
    fallback = property(lambda self: self.options.run.fallback)
    progress = property(lambda self: self.options.run.progress)

    # ---- public API --------------------------------------------------------------------------------------------

    def parse(self, source: Any, *, name: str | None = None) -> ParsedDocument:
        """One document; raises `DocumentError` when it cannot be opened."""
        items = expand_sources(source) if name is None else [source]
        if len(items) != 1:
            raise LayoutError(f"{source!r} names {len(items)} documents: use parse_many() for several")
        doc = open_document(items[0], name=name, password=self.password, policy=self.policy, limits=self.limits)
        return next(self._run([doc]))

    def parse_many(self, sources: Any) -> Iterator[ParsedDocument]:
        """Every document of ``sources`` (paths, folders, globs, URLs, bytes, images) in order, each yielded as
        soon as its pages are done; one that cannot be opened comes back with ``error`` set and no pages."""
        return self._run(self._open_each(expand_sources(sources)))

    # ---- internals ---------------------------------------------------------------------------------------------

    def _open_each(self, items: Iterable[Any]) -> Iterator[DocumentSource | ParsedDocument]:
        for item in items:
            try:
                yield open_document(item, password=self.password, policy=self.policy, limits=self.limits)
            except Exception as exc:  # noqa: BLE001 - a document that cannot be opened fails alone
                _log.warning("%s", exc)
                source = getattr(exc, "source", item) if isinstance(exc, DocumentError) else item
                error = str(exc) if isinstance(exc, DocumentError) else f"{item}: {type(exc).__name__}: {exc}"
                yield ParsedDocument(
                    source=str(source) if not isinstance(item, bytes | bytearray) else "<bytes>", error=error
                )

    def _ocr_engine(self) -> OCREngine:
        if self._ocr is None:
            self._ocr = ocr_engine_for(self.lang, self._ocr_choice if isinstance(self._ocr_choice, str) else "auto")
        return self._ocr

    def _settings(self) -> dict[str, Any]:
        """What a page's cache key depends on: the schema, the options' fingerprint (`cache_fingerprint`) and
        the model; the VLM options only when the VLM may read pages."""
        out: dict[str, Any] = {"schema": SCHEMA_VERSION, **cache_fingerprint(self.options)}
        if self.engine is not None and self.backend != "ocr":
            out["model"] = self.engine.model_name
        else:
            out.pop("vlm")
        return out

    def _key(self, page: PageSource) -> str:
        blob = json.dumps({"page": page.key, "settings": self._settings()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def _run(self, docs: Iterable[DocumentSource | ParsedDocument]) -> Iterator[ParsedDocument]:
        show = self.progress if self.progress is not None else sys.stderr.isatty()
        bar = tqdm(total=0, unit="page", desc="parsing", disable=not show)
        states: deque[_DocState] = deque()
        chunk: list[_Job] = []
        try:
            for doc in docs:
                if isinstance(doc, ParsedDocument):
                    states.append(_DocState(doc.source, None, [], doc.error))
                    continue
                state = _DocState(doc.name, doc, [None] * doc.page_count)
                states.append(state)
                bar.total += doc.page_count
                bar.refresh()
                for page in doc.pages():
                    chunk.append(_Job(state, page, self._key(page)))
                    if len(chunk) >= self.batch_size:
                        self._process(chunk, bar)
                        chunk = []
                        yield from self._finished(states)
            if chunk:
                self._process(chunk, bar)
            yield from self._finished(states)
        finally:
            bar.close()
            for state in states:
                if state.doc is not None:
                    state.doc.close()

    def _finished(self, states: deque[_DocState]) -> Iterator[ParsedDocument]:
        while states and states[0].done():
            state = states.popleft()
            if state.doc is not None:
                state.doc.close()
            pages = [p for p in state.pages if p is not None]
            yield ParsedDocument(source=state.name, pages=pages, error=state.error)

    def _process(self, jobs: list[_Job], bar: Any) -> None:
        vlm_jobs: list[_Job] = []
        ocr_jobs: list[tuple[_Job, str | None]] = []
        for job in jobs:
            if job.page.error is not None:  # not loadable, or past the reader's limits: not asked again
                self._finish(job, self._failed(job, job.page.error), bar)
                continue
            cached = self.cache.get(job.key) if self.cache is not None else None
            if cached is not None:
                self._finish(job, cached, bar, store=False)
                continue
            text_page = self._text_layer_page(job)
            if job.page.error is not None:  # the text layer went past the reader's limits
                self._finish(job, self._failed(job, job.page.error), bar)
                continue
            if text_page is not None:
                self._finish(job, text_page, bar)
                continue
            if self._wants_vlm():
                vlm_jobs.append(job)
            else:
                ocr_jobs.append((job, None))
        if vlm_jobs:
            for job, page_or_reason in self._run_vlm(vlm_jobs):
                if isinstance(page_or_reason, Page):
                    self._finish(job, page_or_reason, bar)
                elif self.fallback:
                    ocr_jobs.append((job, page_or_reason))
                else:
                    self._finish(job, self._failed(job, page_or_reason), bar)
        if ocr_jobs:
            self._run_ocr(ocr_jobs, bar)

    def _wants_vlm(self) -> bool:
        return self.backend == "vlm" or (self.backend == "auto" and self.engine is not None)

    def _text_layer_page(self, job: _Job) -> Page | None:
        """The page read from its PDF text layer (backend "auto" only), or None when it has none or one that
        fails its checks (`TextLayerOptions`; the reason goes on the job)."""
        if self.backend != "auto" or job.page.size_pt is None:
            return None
        dpi = job.page.safe_dpi(self.dpi)
        try:
            layer = job.page.text_layer(dpi, checks=self.options.text_layer)
        except PageLimitError as exc:  # the page fails (job.page.error): it is not loaded again to draw it
            _log.warning("%s", exc)
            return None
        except Exception as exc:  # noqa: BLE001 - a broken text layer: read the page's image instead
            _log.warning("%s page %d: text layer unreadable (%s)", job.state.name, job.page.number, exc)
            job.rejected = f"its text layer could not be read ({type(exc).__name__}: {exc})"
            return None
        if layer is None:
            return None
        job.rejected = layer.rejected or self._ocr_disagrees(job, layer.verify, dpi)
        if job.rejected is not None:
            _log.info("%s page %d: text layer rejected: %s", job.state.name, job.page.number, job.rejected)
            return None
        w, h = job.page.size_pt
        return Page(
            number=job.page.number,
            width=round(w * dpi / 72),
            height=round(h * dpi / 72),
            dpi=dpi,
            blocks=layer.blocks,
            backend="pdf_text",
        )

    def _ocr_disagrees(
        self, job: _Job, lines: list[tuple[tuple[float, float, float, float], str]], dpi: float
    ) -> str | None:
        """Why the text layer's ``lines`` cannot be trusted: OCR of the page image reads something else in their
        boxes; None when it agrees (or there is nothing to compare, or no OCR to compare with)."""
        if not lines:
            return None
        try:
            engine = self._ocr_engine()
        except (QwenVLError, FileNotFoundError) as exc:
            _log.warning("%s page %d: text layer not compared with OCR (%s)", job.state.name, job.page.number, exc)
            return None
        image, got = job.page.render(job.page.ocr_dpi(dpi))
        agreement = ocr_agreement(image, got / dpi, lines, engine)
        if agreement >= self.options.text_layer.min_ocr_agreement:
            return None
        if not self._wants_vlm():  # OCR reads the page next, from this rendering
            job.image, job.dpi = image, got
        return (
            f"its text is invisible, lies over an image or is set in symbolic fonts, and OCR of the image reads "
            f"something else in its place "
            f"(similarity {agreement:.2f} over {len(lines)} lines, below {self.options.text_layer.min_ocr_agreement})"
        )

    def vlm_dpi(self, page: PageSource) -> float:
        """The resolution ``page`` is rendered at for the VLM: the one that fills the pixel budget (images keep
        their own pixels); for olmOCR-2, the one that gives the longest side olmOCR renders."""
        size = page.size_pt
        if size and self.vlm.format == "olmocr":
            return olmocr.LONGEST_SIDE / max(size) * 72.0
        return dpi_for_budget(*size, self.vlm.profile.image_limits(None, self.vlm.max_pixels)[1]) if size else self.dpi

    def prepare_page(self, page: PageSource) -> Page | tuple[PIL.Image.Image, float] | None:
        """The first, CPU-only step of a page on the VLM path, for running it apart from the engine (Ray): the
        finished page when the page cache or the text layer has it, else the page rendered for the VLM (image
        and resolution), else None (it goes to OCR, or its rendering failed; `parse_pages` says why)."""
        job = _Job(_DocState(page.document.name, page.document), page, self._key(page))
        cached = self.cache.get(job.key) if self.cache is not None else None
        if cached is not None:
            return cached
        text_page = self._text_layer_page(job) if page.error is None else None
        if page.error is not None:  # failed here, not read again in the engine's stage
            return self._failed(job, page.error)
        if text_page is not None:
            if self.cache is not None:
                self.cache.put(job.key, text_page)
            return text_page
        if not self._wants_vlm():
            return None
        try:
            return self._render(job, self.vlm_dpi(page)), job.dpi
        except Exception:  # noqa: BLE001 - parse_pages renders it again and records the reason
            return self._failed(job, page.error) if page.error is not None else None  # past the limits: not again

    def parse_pages(
        self, pages: list[PageSource], *, images: list[tuple[PIL.Image.Image, float] | None] | None = None
    ) -> list[Page]:
        """Pages of any documents, as `parse_many` would read them (cache, backend choice, batching, retries,
        fallback), in the order given. ``images``: the pages already rendered for the VLM (`prepare_page`),
        used instead of rendering them again."""
        jobs = []
        states: dict[int, _DocState] = {}  # one per document, as in parse_many
        for k, page in enumerate(pages):
            doc = page.document
            state = states.setdefault(id(doc), _DocState(doc.name, doc, [None] * doc.page_count))
            job = _Job(state, page, self._key(page))
            rendered = images[k] if images is not None else None
            if rendered is not None:
                job.image, job.dpi = rendered
            jobs.append(job)
        for start in range(0, len(jobs), self.batch_size):
            self._process(jobs[start : start + self.batch_size], _NO_BAR)
        out = []
        for job in jobs:
            done = job.state.pages[job.page.number - 1]
            assert done is not None
            out.append(done)
        return out

    def _failed(self, job: _Job, reason: str) -> Page:
        width, height = job.image.size if job.image is not None else (0, 0)
        return Page(
            number=job.page.number,
            width=width,
            height=height,
            dpi=job.dpi,
            status="failed",
            error=reason,
            usage=job.usage,
        )

    def _finish(self, job: _Job, page: Page, bar: Any, *, store: bool = True) -> None:
        if job.rejected is not None and page.text_layer_rejected is None:
            page = page.model_copy(update={"text_layer_rejected": job.rejected})
        if job.page.damage is not None and page.status != "failed":  # pdfium read only part of its content
            why = f"pdfium could not read all of the page: {job.page.damage}"
            page = page.model_copy(
                update={
                    "status": "fallback" if page.blocks else "failed",
                    "error": why + (f"; {page.error}" if page.error else ""),
                }
            )
        job.state.pages[job.page.number - 1] = page
        job.image = None
        if store and self.cache is not None and page.status != "failed":
            self.cache.put(job.key, page)
        bar.update(1)

    def _render(self, job: _Job, dpi: float) -> PIL.Image.Image:
        image, job.dpi = job.page.render(dpi)
        job.image = image
        return image

    def _run_vlm(self, jobs: list[_Job]) -> Iterator[tuple[_Job, Page | str]]:
        """Pages through the engine: one call per round; answers cut off by max_tokens are retried as tiles and
        errors retried ``retries`` times. Yields each page with its Page, or with the reason it failed."""
        assert self.engine is not None
        if self.vlm.format == "olmocr":
            yield from self._run_olmocr(jobs)
            return
        tiles: dict[int, list[tuple[tuple[int, ...], list[Block]]]] = {}
        failed: dict[int, str] = {}
        todo: list[tuple[int, Tile, tuple[int, ...], int]] = []
        for i, job in enumerate(jobs):
            try:
                image = job.image if job.image is not None else self._render(job, self.vlm_dpi(job.page))
            except Exception as exc:  # noqa: BLE001 - one unrenderable page fails alone
                failed[i] = f"the page could not be rendered: {type(exc).__name__}: {exc}"
                continue
            tiles[i] = []
            todo.append((i, Tile(0, 0, image.width, image.height), (0,), 0))
        while todo:
            requests = []
            for i, tile, _, _ in todo:
                page_image = jobs[i].image
                assert page_image is not None
                crop = page_image if tile.depth == 0 else page_image.crop((tile.x0, tile.y0, tile.x1, tile.y1))
                requests.append(layout_request(crop, self.vlm))
            self.engine_calls += 1
            results = self.engine.generate(requests)
            next_todo: list[tuple[int, Tile, tuple[int, ...], int]] = []
            for (i, tile, path, attempt), result in zip(todo, results, strict=True):
                job = jobs[i]
                job.usage.add(result.usage)
                if i in failed:
                    continue
                if result.finish_reason == "length":
                    if tile.depth < self.vlm.max_tile_depth:
                        for k, sub in enumerate(split_tile(tile)):
                            next_todo.append((i, sub, path + (k,), 0))
                    else:
                        failed[i] = (
                            f"the answer was cut off by max_tokens={self.vlm.max_tokens} even on tiles of "
                            f"depth {tile.depth}: raise max_tokens or max_tile_depth"
                        )
                elif result.error is not None:
                    if attempt < self.retries:
                        next_todo.append((i, tile, path, attempt + 1))
                    else:
                        failed[i] = f"{type(result.error).__name__}: {result.error}"
                else:
                    assert job.image is not None
                    blocks = blocks_from_result(
                        result, tile, self.vlm, page_number=job.page.number, page_size=job.image.size
                    )
                    tiles[i].append((path, blocks))
            todo = next_todo
        for i, job in enumerate(jobs):
            if i in failed:
                yield job, failed[i]
                continue
            ordered = [b for _, blocks in sorted(tiles[i], key=lambda t: t[0]) for b in blocks]
            if not ordered:
                yield job, "the model found no blocks on the page"
                continue
            ordered = [
                b.model_copy(update={"reading_order": k, "id": f"p{job.page.number}-b{k}"})
                for k, b in enumerate(ordered)
            ]
            yield job, self._vlm_page(job, ordered)

    def _run_olmocr(self, jobs: list[_Job]) -> Iterator[tuple[_Job, Page | str]]:
        """Pages through olmOCR-2 (`qwenvl.layout.olmocr.read_pages`: one engine call per round, turned pages
        asked again), their markdown into blocks boxed by the page's words. Yields each page with its Page, or
        with the reason it failed (then it falls back to OCR)."""
        rendered: list[tuple[int, _Job]] = []
        for i, job in enumerate(jobs):
            try:
                if job.image is None:
                    self._render(job, self.vlm_dpi(job.page))
                rendered.append((i, job))
            except Exception as exc:  # noqa: BLE001 - one unrenderable page fails alone
                yield job, f"the page could not be rendered: {type(exc).__name__}: {exc}"

        def count(k: int, result: Any) -> None:
            rendered[k][1].usage.add(result.usage)

        images = [job.image for _, job in rendered]
        self.engine_calls += 1
        readings = olmocr.read_pages(self.engine, images, retries=self.retries, lora=self.vlm.lora, on_result=count)  # type: ignore[arg-type]
        for (_, job), reading in zip(rendered, readings, strict=True):
            if reading.blocks is None:
                yield job, reading.error or "olmOCR gave no answer"
                continue
            if not reading.blocks:
                yield job, "olmOCR's answer holds no text"
                continue
            yield job, self._olmocr_page(job, reading)

    def _olmocr_page(self, job: _Job, reading: olmocr.Reading) -> Page:
        """The page of an olmOCR answer: its blocks in the answer's order, each boxed by the page's words (the
        text layer's where it can be trusted, else OCR of the same render), a figure by the answer's own box."""
        assert job.image is not None and reading.blocks is not None
        words = self._page_words(job, reading.rotation)
        aligned = olmocr.align_blocks(reading.blocks, words)
        boxes = olmocr.formula_boxes(reading.blocks, [box for box, _ in aligned], job.image.size)
        scale = (job.image.width / reading.image.width, job.image.height / reading.image.height)
        blocks = []
        for k, (block, box) in enumerate(zip(reading.blocks, boxes, strict=True)):
            if block.type is BlockType.FIGURE:
                box = olmocr.figure_box(block, scale, reading.rotation, reading.image.size)
            if box is not None:
                box = box.clip(*job.image.size)
            blocks.append(
                Block(
                    id=f"p{job.page.number}-b{k}",
                    type=block.type,
                    bbox=box,
                    text=block.text,
                    html=block.html,
                    reading_order=k,
                    level=block.level,
                    origin="vlm",
                )
            )
        unboxed = sum(1 for b in blocks if b.bbox is None)
        if unboxed:
            _log.info("%s page %d: %d of %d blocks not found among the page's words", job.state.name,
                      job.page.number, unboxed, len(blocks))  # fmt: skip
        return self._vlm_page(job, blocks)

    @staticmethod
    def _vlm_page(job: _Job, blocks: list[Block]) -> Page:
        """The page the VLM read, with ``blocks``, at the size of its render."""
        assert job.image is not None
        return Page(
            number=job.page.number,
            width=job.image.width,
            height=job.image.height,
            dpi=job.dpi,
            blocks=blocks,
            backend="vlm",
            usage=job.usage,
        )

    def _page_words(self, job: _Job, rotation: int = 0) -> list[tuple[str, tuple[float, float, float, float]]]:
        """The page's words in pixels of its render: the text layer's where it passes its checks, else OCR of the
        render turned by ``rotation`` as the model read it, mapped back onto the page as given (counted in
        `ocr_pages` and `ocr_seconds`: OCR runs only on pages that need it)."""
        try:
            found = job.page.words(job.dpi, self.options.text_layer)
        except Exception as exc:  # noqa: BLE001 - an unreadable text layer: OCR reads the words
            _log.info("%s page %d: text-layer words unreadable (%s)", job.state.name, job.page.number, exc)
            found = None
        if found is not None and found[1] and found[0]:
            return found[0]
        assert job.image is not None
        start = time.perf_counter()
        try:
            layout = self._ocr_engine().read(olmocr.rotate(job.image, rotation))
        except (QwenVLError, FileNotFoundError) as exc:
            _log.warning("%s page %d: no words to box olmOCR's blocks by (%s)", job.state.name, job.page.number, exc)
            return []
        self.ocr_pages += 1
        self.ocr_seconds += time.perf_counter() - start
        return [(w.text, olmocr.unrotate_box(w.bbox, rotation, job.image.size)) for w in layout.words()]

    def _run_ocr(self, jobs: list[tuple[_Job, str | None]], bar: Any) -> None:
        try:
            engine = self._ocr_engine()
        except (QwenVLError, FileNotFoundError) as exc:
            for job, reason in jobs:
                why = f"{reason}; OCR fallback unavailable: {exc}" if reason else f"OCR unavailable: {exc}"
                self._finish(job, self._failed(job, why), bar)
            return

        # pdfium is not thread-safe: pages are rendered here, OCR runs in the pool.
        images: list[PIL.Image.Image | Exception] = []
        for job, _ in jobs:
            try:
                want = job.page.ocr_dpi(self.dpi)
                ready = job.image is not None and job.dpi >= want
                images.append(job.image if ready and job.image is not None else self._render(job, want))
            except Exception as exc:  # noqa: BLE001 - one unrenderable page fails alone
                images.append(exc)

        def one(k: int) -> Page:
            (job, reason), image = jobs[k], images[k]
            if isinstance(image, Exception):
                why = f"the page could not be rendered: {type(image).__name__}: {image}"
                return self._failed(job, f"{reason}; {why}" if reason else why)
            try:
                blocks = ocr_layout(image, engine, page_number=job.page.number)
            except Exception as exc:  # noqa: BLE001 - one bad page fails alone
                why = f"OCR failed: {type(exc).__name__}: {exc}"
                return self._failed(job, f"{reason}; {why}" if reason else why)
            status: Literal["ok", "fallback"] = "fallback" if reason else "ok"
            error = reason
            if not blocks:
                error = (f"{reason}; " if reason else "") + "OCR found no text on the page"
            elif (doubt := _unreadable(blocks, self.options.ocr.min_confidence)) is not None:
                status, error = "fallback", (f"{reason}; " if reason else "") + doubt
            return Page(
                number=job.page.number,
                width=image.width,
                height=image.height,
                dpi=job.dpi,
                blocks=blocks,
                status=status,
                error=error,
                backend="ocr",
                usage=job.usage,
            )

        with ThreadPoolExecutor(max_workers=self.ocr_workers) as pool:
            for (job, _), page in zip(jobs, pool.map(one, range(len(jobs))), strict=True):
                self._finish(job, page, bar)


class _NoBar:
    def update(self, n: int) -> None:
        pass


_NO_BAR = _NoBar()


def _changed_keywords(arguments: dict[str, Any]) -> list[str]:
    """The keyword arguments of `DocumentParser.__init__` given with a value other than their default."""
    parameters = inspect.signature(DocumentParser.__init__).parameters
    return sorted(
        name
        for name, p in parameters.items()
        if p.kind is p.KEYWORD_ONLY
        and name not in ("options", "model", "base_url", "engine_options")
        and arguments.get(name, p.default) != p.default
    )


#: the fewest characters OCR must read on a page for its confidence to judge the page (`_unreadable`)
_JUDGED_CHARS = 200


def _unreadable(blocks: list[Block], min_confidence: float) -> str | None:
    """Why OCR's ``blocks`` are not a reading of the page: their mean confidence, per character, is below
    ``min_confidence``; None when it is not, or when they hold under `_JUDGED_CHARS` characters (a chart's
    labels and the strokes OCR takes for letters: too little text to judge the page by)."""
    scored = [(len(b.text), b.confidence) for b in blocks if b.confidence is not None and b.text]
    chars = sum(n for n, _ in scored)
    if chars < _JUDGED_CHARS:
        return None
    mean = sum(n * c for n, c in scored) / chars
    if mean >= min_confidence:
        return None
    return (
        f"OCR read it with low confidence ({mean:.2f} over {chars} characters, below {min_confidence}): "
        "handwriting, damage or drawings, not text it can read; its text is likely wrong"
    )
