"""Documents into page images: PDF (pypdfium2, with its text layer), multi-page TIFF, PNG/JPEG/WebP, bytes,
folders and globs."""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import logging
import math
import os
import re
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import PIL.ImageSequence

from qwenvl._lazy import require
from qwenvl.errors import DocumentError, MediaError, PageError, PageLimitError
from qwenvl.layout.model import Block
from qwenvl.layout.options import TextLayerOptions
from qwenvl.layout.pdf_worker import PdfLimits, new_document_id, release_document, worker_for
from qwenvl.layout.tables import TableGrid
from qwenvl.layout.text_layer import TextLayer
from qwenvl.media import MediaPolicy, describe_source, pixel_limit_error, read_source_bytes

__all__ = [
    "DOCUMENT_SUFFIXES",
    "DocumentError",
    "DocumentSource",
    "PageSource",
    "PdfLimits",
    "TextLayer",
    "dpi_for_budget",
    "expand_sources",
    "open_document",
    "render_page",
]

log = logging.getLogger(__name__)

DOCUMENT_SUFFIXES = (".pdf", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
_DEFAULT_IMAGE_DPI = 200.0


#: the most pixels a PDF page is rendered to, whatever size it claims (an A0 sheet at 200 dpi is 62 MP)
MAX_RENDER_PIXELS = 64_000_000
_CAMELOT_MISSING = False
#: pages whose longer side is under this many points (half of US Letter's 11 inches) are read by OCR at twice
#: the dpi (`PageSource.ocr_dpi`)
SMALL_PAGE_PT = 396.0


def capped_dpi(width_pt: float, height_pt: float, dpi: float, max_pixels: int = MAX_RENDER_PIXELS) -> float:
    """``dpi``, lowered where a page of ``width_pt`` x ``height_pt`` points would render to over ``max_pixels``
    (counted as pdfium sizes the bitmap: each side rounded up, at least one pixel), however large or thin the
    page claims to be."""
    w, h = max(width_pt, 1e-3), max(height_pt, 1e-3)
    max_pixels = max(1, max_pixels)

    def pixels(dpi: float) -> int:  # with the scale the renderer computes from the dpi
        return max(1, math.ceil(w * (dpi / 72.0))) * max(1, math.ceil(h * (dpi / 72.0)))

    if pixels(dpi) <= max_pixels:
        return dpi
    scale = min(dpi / 72.0, math.sqrt(max_pixels / (w * h)))
    for side, other in ((w, h), (h, w)):  # a sliver: its short side stays one pixel, the long side takes the rest
        if other * scale < 1:
            scale = min(scale, max_pixels / side)
    capped = 72.0 * scale
    while pixels(capped) > max_pixels:  # each side's rounding up
        capped *= 0.999
    return capped


def dpi_for_budget(width_pt: float, height_pt: float, max_pixels: int, *, lo: float = 10.0, hi: float = 300.0) -> float:
    """The render resolution that makes a page of ``width_pt`` x ``height_pt`` points about ``max_pixels`` pixels."""
    dpi = 72.0 * math.sqrt(max_pixels / max(1.0, width_pt * height_pt))
    return float(min(hi, max(lo, round(dpi, 1))))


@dataclass
class PageSource:
    """One page of a document, rendered on demand."""

    document: DocumentSource
    number: int
    #: size in PDF points for PDF pages, None for images (and for PDF pages that cannot be loaded)
    size_pt: tuple[float, float] | None
    #: why the page cannot be read, typed ("PageError: <file> page N: ..." for a page object pdfium cannot load,
    #: "PageLimitError: ..." for one past the reader's limits): set, the page fails with this reason and pdfium
    #: is not asked again
    error: str | None = None
    #: what of the page's content pdfium could not read (known once the page was loaded); the page says so
    damage: str | None = None

    @property
    def key(self) -> str:
        """The page's content key: the document's digest and the page number."""
        return f"{self.document.digest}:{self.number}"

    def render(self, dpi: float) -> tuple[PIL.Image.Image, float]:
        """The page as an RGB image and the resolution it has (images keep their own pixels; a PDF page is
        rendered at most `MAX_RENDER_PIXELS` large, at a lower resolution when it claims a huge size). Raises
        `PageError` naming the file and the page when it cannot be drawn."""
        if self.document.kind != "pdf":
            return self.document._render_image(self.number)
        (width, height, stride, dpi, damage), rows = self._pdf("render", dpi)
        self.damage = damage
        assert rows is not None
        image = PIL.Image.frombuffer("RGB", (width, height), rows, "raw", "RGB", stride, 1)
        return image, dpi

    def safe_dpi(self, dpi: float) -> float:
        """``dpi``, capped so that this page renders to at most `MAX_RENDER_PIXELS`."""
        return capped_dpi(*self.size_pt, dpi) if self.size_pt is not None else dpi

    def ocr_dpi(self, dpi: float) -> float:
        """The resolution OCR reads this page at: ``dpi``, doubled for a PDF page whose longer side is under
        `SMALL_PAGE_PT` (a receipt, a ticket, a label: its print is small), capped as `safe_dpi`. Larger pages
        keep ``dpi``: the pages of a small book scanned at its size read worse enlarged (tests/data/real)."""
        if self.size_pt is None or not 0 < max(self.size_pt) < SMALL_PAGE_PT:
            return dpi
        return self.safe_dpi(2.0 * dpi)

    def text_layer(self, dpi: float, *, min_chars: int = 1, checks: TextLayerOptions | None = None) -> TextLayer | None:
        """The PDF text layer as blocks in page pixels at ``dpi``, checked as ``checks`` say (default
        `TextLayerOptions()`; `TextLayer`); None when the page has none (an image, a scan without one, fewer than
        ``min_chars`` characters). Tables: see `_tables`. Raises `PageError` when the page cannot be read."""
        if self.document.kind != "pdf":
            return None
        checks = checks or TextLayerOptions()
        (layer, self.damage), _ = self._pdf("text_layer", dpi, min_chars, checks, None)
        if layer is not None and layer.tables_wanted:  # cells side by side: camelot, in a worker of its own
            grids = self._tables(dpi, checks)
            try:
                (layer, self.damage), _ = self._pdf("finish_text_layer", dpi, grids)
            except PageLimitError:
                raise
            except PageError:  # the reader was restarted in between: read the layer again, with the grids
                again = checks if grids is not None else dataclasses.replace(checks, tables="rules")
                (layer, self.damage), _ = self._pdf("text_layer", dpi, min_chars, again, grids)
        return layer  # type: ignore[no-any-return]

    def words(
        self, dpi: float, checks: TextLayerOptions | None = None
    ) -> tuple[list[tuple[str, tuple[float, float, float, float]]], bool] | None:
        """The text layer's words in reading order, as (text, box in pixels at ``dpi``), and whether the layer
        passes its checks (``checks``: default `TextLayerOptions()`); None for a page without a text layer."""
        if self.document.kind != "pdf":
            return None
        (found, self.damage), _ = self._pdf("words", dpi, checks or TextLayerOptions())
        return found  # type: ignore[no-any-return]

    def _tables(self, dpi: float, checks: TextLayerOptions) -> list[TableGrid] | None:
        """camelot's tables on this page, found in the table worker under ``checks.table_timeout`` and the
        document's memory limit; None, with a warning, where camelot is not installed, fails or goes past
        them (the page keeps its text; the layout's rules find its tables)."""
        global _CAMELOT_MISSING
        if _CAMELOT_MISSING:
            return None
        limits = dataclasses.replace(
            self.document.limits, timeout=min(self.document.limits.timeout, checks.table_timeout)
        )
        try:
            grids, _ = self.document._pdf_call("tables", self.number - 1, dpi, role="tables", limits=limits)
        except PageError as exc:
            if "(ImportError)" in str(exc) or "(ModuleNotFoundError)" in str(exc):
                _CAMELOT_MISSING = True
                log.warning("tables in text layers are found by simple rules: `pip install 'qwenvl[pdf]'` adds camelot")
            else:
                log.warning(
                    "%s page %d: camelot stopped (%s); its tables are found by simple rules",
                    self.document.name,
                    self.number,
                    exc,
                )
            return None
        return grids  # type: ignore[no-any-return]

    def text_blocks(self, dpi: float, *, min_chars: int = 1) -> list[Block] | None:
        """Blocks from the PDF text layer in page pixels at ``dpi``, or None when the page has no layer or one
        that is not text (`text_layer` with its default checks; lines are not compared with OCR here)."""
        layer = self.text_layer(dpi, min_chars=min_chars)
        return layer.blocks if layer is not None and layer.rejected is None else None

    def _pdf(self, op: str, *args: Any) -> tuple[Any, bytearray | None]:
        """``op`` on this page in the PDF worker; a page past the worker's limits is not asked again."""
        if self.error is not None:
            kind = PageLimitError if self.error.startswith("PageLimitError") else PageError
            raise kind(self.error, self.document.name)
        try:
            return self.document._pdf_call(op, self.number - 1, *args)
        except PageLimitError as exc:
            message = f"{self.document.name} page {self.number}: {exc}"
            self.error = f"PageLimitError: {message}"
            raise PageLimitError(message, self.document.name) from None
        except PageError as exc:
            raise PageError(f"{self.document.name} page {self.number}: {exc}", self.document.name) from None


class DocumentSource:
    """An opened document: its name, content digest and pages. Close it (or use ``with``) to free the file.

    A PDF is read by pdfium in the worker process of its `PdfLimits` (`qwenvl.layout.pdf_worker`), so that no
    page can take more memory or time than they allow."""

    def __init__(
        self,
        name: str,
        digest: str,
        kind: str,
        handle: Any,
        page_count: int,
        *,
        data: bytes | None = None,
        password: str | None = None,
        limits: PdfLimits | None = None,
        claimed_pages: int | None = None,
    ) -> None:
        self.name = name
        self.digest = digest
        self.kind = kind
        self._handle = handle
        self.page_count = page_count
        #: the pages a PDF's page tree claims; when more than the file holds, the page after the last one is a
        #: failed page that says so
        self.claimed_pages = claimed_pages if claimed_pages is not None else page_count
        self.limits = limits or PdfLimits()
        self._source = (data or b"", password)
        # a PDF is closed in its worker when this is closed or collected
        self._release = weakref.finalize(self, release_document, self.limits, handle) if kind == "pdf" else None

    def __enter__(self) -> DocumentSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Frees the underlying PDF or image."""
        if self._release is not None:
            self._release()
            self._source = (b"", None)
        elif self._handle is not None and hasattr(self._handle, "close"):
            self._handle.close()
        self._handle = None

    def pages(self) -> Iterator[PageSource]:
        """The pages, first to last."""
        for number in range(1, self.page_count + 1):
            yield self.page(number)

    def page(self, number: int) -> PageSource:
        """Page ``number`` (1-based); a PDF page that cannot be loaded comes with its `PageSource.error`."""
        if not 1 <= number <= self.page_count:
            raise DocumentError(f"{self.name} has no page {number} (it has {self.page_count})")
        if self.kind != "pdf":
            return PageSource(self, number, None)
        if self.page_count < self.claimed_pages and number == self.page_count:
            error = (
                f"PageError: {self.name} pages {number}-{self.claimed_pages}: the page tree claims "
                f"{self.claimed_pages} pages, but the file holds no page after page {number - 1}"
            )
            return PageSource(self, number, None, error=error)
        try:
            (w, h), _ = self._pdf_call("size", number - 1)
        except PageLimitError as exc:
            return PageSource(self, number, None, error=f"PageLimitError: {self.name} page {number}: {exc}")
        except PageError as exc:
            why = f"PageError: {self.name} page {number}: pdfium cannot load it: {exc}"
            return PageSource(self, number, None, error=why)
        return PageSource(self, number, (w, h))

    def _pdf_call(
        self, op: str, *args: Any, role: str = "pages", limits: PdfLimits | None = None
    ) -> tuple[Any, bytearray | None]:
        """``op`` on this PDF in its worker for ``role`` (which opens it first where it has not), under ``limits``
        (default: the document's)."""
        if self._handle is None:
            raise DocumentError(f"{self.name} is closed", self.name)
        limits = limits or self.limits
        return worker_for(self.limits, role).call(op, self._handle, self._source, *args, limits=limits)

    def _render_image(self, number: int) -> tuple[PIL.Image.Image, float]:
        self._handle.seek(number - 1)
        frame = self._handle.copy()
        own = frame.info.get("dpi") or self._handle.info.get("dpi")
        from qwenvl.media import _to_rgb

        # Files without a resolution (or with a placeholder such as 1 dpi) are taken as 200 dpi scans.
        return _to_rgb(frame), float(own[0]) if own and own[0] >= 30 else _DEFAULT_IMAGE_DPI


def _has_no_pages(data: bytes) -> bool:
    """True for a PDF whose page tree is empty (PDFium refuses to open those with an unhelpful error)."""
    return bool(re.search(rb"/Count\s+0\b", data)) and not re.search(rb"/Type\s*/Page(?!s)", data)


def _sniff(data: bytes) -> str:
    if data[:5] == b"%PDF-" or b"%PDF-" in data[:1024]:
        return "pdf"
    return "image"


def open_document(
    source: str | os.PathLike[str] | bytes | PIL.Image.Image,
    *,
    name: str | None = None,
    password: str | None = None,
    policy: MediaPolicy | None = None,
    limits: PdfLimits | None = None,
) -> DocumentSource:
    """Opens a PDF, TIFF or image from a path, URL, bytes or PIL image; raises `DocumentError` naming the file.
    A PDF's pages are read under ``limits`` (default `PdfLimits()`: 1.25 GiB and 120 s a page)."""
    policy = policy or MediaPolicy(max_bytes=1 << 30)
    if isinstance(source, PIL.Image.Image):
        buf = io.BytesIO()
        source.save(buf, "PNG")
        data = buf.getvalue()
        label = name or describe_source(source)
    else:
        label = name or (describe_source(source) if isinstance(source, bytes | bytearray) else str(source))
        if isinstance(source, str) and any(ch in source for ch in "*?[") and not Path(source).exists():
            if "://" not in source[:16]:
                raise DocumentError(f"{label}: the pattern matches no file", source)
        try:
            data = read_source_bytes(source, policy)
        except MediaError as exc:
            raise DocumentError(f"{label}: {exc}", source) from exc
    digest = hashlib.sha256(data).hexdigest()
    if _sniff(data) == "pdf":
        require("pypdfium2", "pdf")  # the worker reads it: a missing package is named here
        limits = limits or PdfLimits()
        doc = DocumentSource(label, digest, "pdf", new_document_id(), 0, data=data, password=password, limits=limits)
        try:
            (claimed, holds), _ = doc._pdf_call("count")
        except PageError as exc:
            doc.close()
            msg = str(exc)
            if _has_no_pages(data):
                raise DocumentError(f"{label}: the PDF has no pages", source) from None
            if "password" in msg.lower():
                hint = "it is encrypted: pass password=..." if password is None else "the password is wrong"
                raise DocumentError(f"{label}: cannot open the PDF, {hint}", source) from None
            if isinstance(exc, PageLimitError):
                raise DocumentError(f"{label}: opening the PDF {msg}", source) from None
            raise DocumentError(f"{label}: not a readable PDF ({msg}); is the file complete?", source) from None
        if holds == 0:
            doc.close()
            what = "has no pages" if claimed == 0 else f"claims {claimed} pages, but none of them can be loaded"
            raise DocumentError(f"{label}: the PDF {what}", source)
        doc.page_count, doc.claimed_pages = min(claimed, holds + 1), claimed
        return doc
    try:
        image = PIL.Image.open(io.BytesIO(data))
        too_big = pixel_limit_error(image.size, policy, source)
        if too_big is None:  # the header is read; only an image within the limit is decoded
            image.load()
            frames = sum(1 for _ in PIL.ImageSequence.Iterator(image))
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as exc:
        raise DocumentError(
            f"{label}: not a PDF or an image Pillow can read ({exc}); give a PDF, TIFF, PNG, JPEG or WebP file",
            source,
        ) from exc
    if too_big is not None:
        raise DocumentError(f"{label}: {too_big}", source) from too_big
    return DocumentSource(label, digest, "image", image, frames)


def expand_sources(
    sources: str | os.PathLike[str] | bytes | PIL.Image.Image | Iterable[Any],
) -> list[str | os.PathLike[str] | bytes | PIL.Image.Image]:
    """Paths, folders (their documents, sorted), glob patterns, URLs, bytes and images as a flat list."""
    if isinstance(sources, str | os.PathLike | bytes | bytearray | PIL.Image.Image):
        items: Iterable[Any] = [sources]
    else:
        items = sources
    out: list[Any] = []
    for item in items:
        if isinstance(item, str | os.PathLike) and not str(item).startswith(("http://", "https://", "data:")):
            path = Path(item)
            if path.is_dir():
                out.extend(sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in DOCUMENT_SUFFIXES))
                continue
            if any(ch in str(item) for ch in "*?[") and not path.exists():
                matches = sorted(glob.glob(str(item), recursive=True))
                # A pattern that matches nothing stays in the list: opening it fails for that item alone.
                out.extend(matches or [item])
                continue
        out.append(item)
    return out


def render_page(
    source: str | os.PathLike[str] | bytes,
    number: int,
    dpi: float,
    *,
    password: str | None = None,
    limits: PdfLimits | None = None,
) -> PIL.Image.Image:
    """Page ``number`` (1-based) of a document as an image at ``dpi`` (the resolution a `Page` records)."""
    with open_document(source, password=password, limits=limits) as doc:
        if not 1 <= number <= doc.page_count:
            raise DocumentError(f"{doc.name} has {doc.page_count} pages, not a page {number}", source)
        return doc.page(number).render(dpi)[0]


# ---- PDF text layer --------------------------------------------------------------------------------------------
