"""Documents into page images: PDF (pypdfium2, with its text layer), multi-page TIFF, PNG/JPEG/WebP, bytes,
folders and globs."""

from __future__ import annotations

import functools
import glob
import hashlib
import io
import logging
import math
import os
import re
import statistics
import unicodedata
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import PIL.Image
import PIL.ImageSequence

from qwenvl._lazy import require
from qwenvl.errors import DocumentError, MediaError, PageError, PageLimitError
from qwenvl.layout.analysis import Line, RawLayout, Word, assemble, group_lines
from qwenvl.layout.geometry import Box, center, inside
from qwenvl.layout.model import Block
from qwenvl.layout.options import TextLayerOptions
from qwenvl.layout.pdf_worker import PdfLimits, new_document_id, worker_for
from qwenvl.layout.tables import TableGrid
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
#: a text layer with more characters than this is not given to the table finder (camelot reads a page in
#: Python: a page of 500,000 one-character objects would take minutes); its tables are found by simple rules
_MAX_TABLE_CHARS = 30_000
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
        ``min_chars`` characters, a rotated page). Raises `PageError` when the page cannot be read."""
        if self.document.kind != "pdf":
            return None
        (layer, self.damage), _ = self._pdf("text_layer", dpi, min_chars, checks or TextLayerOptions())
        return layer  # type: ignore[no-any-return]

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


@dataclass
class TextLayer:
    """A PDF page's text layer as blocks, and what its checks found."""

    blocks: list[Block]
    #: why the layer is not to be used: too many characters that are not text (control, private-use and
    #: replacement characters, glyphs without a Unicode mapping), or too much text outside the page. None: passed
    rejected: str | None = None
    #: lines to compare with OCR of the page image before the layer is trusted, as (box in pixels, text): set
    #: when most of the text is invisible, lies over an image (a scan's OCR layer, text placed off its glyphs)
    #: or is set in symbolic fonts (whose codes need not be characters) and reads as under half letters
    verify: list[tuple[tuple[float, float, float, float], str]] = field(default_factory=list)


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
        self._release = weakref.finalize(self, worker_for(self.limits).release, handle) if kind == "pdf" else None

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

    def _pdf_call(self, op: str, *args: Any) -> tuple[Any, bytearray | None]:
        """``op`` on this PDF in its worker (which opens it first where it has not)."""
        if self._handle is None:
            raise DocumentError(f"{self.name} is closed", self.name)
        return worker_for(self.limits).call(op, self._handle, self._source, *args, limits=self.limits)

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


#: Unicode categories that are never text: control, private use, surrogates, unassigned
_NOT_TEXT = frozenset({"Cc", "Co", "Cs", "Cn"})
_INVISIBLE_MODES = frozenset({3, 7})  # PDF text render modes that paint nothing (invisible, clip only)
_BOLD_FACE = re.compile(r"bold|black|heavy|semibold|demi", re.IGNORECASE)  # in a font's name
#: PDF font descriptor flags: a symbolic font's codes name glyphs, not characters (without a Unicode map,
#: pdfium reads them as if they were: a text layer of plausible-looking garbage such as '"7+%-')
_SYMBOLIC, _NONSYMBOLIC = 4, 32


@dataclass(frozen=True)
class _PageSpace:
    """From PDF user space (points, y up) to pixels of the page as displayed (its /Rotate applied, y down):
    ``u = ux * x + uy * y + uc`` and ``v = vx * x + vy * y + vc``, times ``scale``."""

    ux: float
    uy: float
    uc: float
    vx: float
    vy: float
    vc: float
    scale: float

    @classmethod
    def of(cls, rotation: int, crop: tuple[float, float, float, float], scale: float) -> _PageSpace:
        """The space of a page turned ``rotation`` degrees clockwise (0, 90, 180 or 270) with crop box
        ``(left, bottom, right, top)``."""
        left, bottom, right, top = crop
        return {
            0: cls(1, 0, -left, 0, -1, top, scale),
            90: cls(0, 1, -bottom, 1, 0, -left, scale),
            180: cls(-1, 0, right, 0, 1, -bottom, scale),
            270: cls(0, -1, top, -1, 0, right, scale),
        }[rotation % 360]

    def box(self, x0: float, y0: float, x1: float, y1: float) -> Box:
        """A user-space box (``x0 < x1``, ``y0 < y1``) in pixels."""
        ua, ub = self.ux * x0 + self.uy * y0 + self.uc, self.ux * x1 + self.uy * y1 + self.uc
        va, vb = self.vx * x0 + self.vy * y0 + self.vc, self.vx * x1 + self.vy * y1 + self.vc
        s = self.scale
        return (min(ua, ub) * s, min(va, vb) * s, max(ua, ub) * s, max(va, vb) * s)


def _pdf_drawings(page: Any, space: _PageSpace, limit: int = 5000) -> tuple[list[Box], list[Box]]:
    """A PDF page's images and ruling lines, in pixels, in one pass over its objects and those of its forms.
    Rules: paths at most 3 points thick and at least three times as long (only the first ``limit`` paths: a
    drawing has thousands). Read through pdfium's C calls: a page of 500,000 objects takes 0.3 s."""
    import ctypes

    import pypdfium2.raw as c

    figures: list[Box] = []
    rules: list[Box] = []
    paths = 0
    kind_of, bounds = c.FPDFPageObj_GetType, c.FPDFPageObj_GetBounds
    image, path, form = c.FPDF_PAGEOBJ_IMAGE, c.FPDF_PAGEOBJ_PATH, c.FPDF_PAGEOBJ_FORM
    x0, y0, x1, y1 = ctypes.c_float(), ctypes.c_float(), ctypes.c_float(), ctypes.c_float()
    refs = (ctypes.byref(x0), ctypes.byref(y0), ctypes.byref(x1), ctypes.byref(y1))
    raw = page.raw
    levels: list[tuple[int, Callable[[int], Any], int]] = [
        (c.FPDFPage_CountObjects(raw), functools.partial(c.FPDFPage_GetObject, raw), 0)
    ]
    while levels:
        count, get, level = levels.pop()
        for i in range(count):
            obj = get(i)
            kind = kind_of(obj)
            if kind == form and level < 1:  # the page's objects and those of its forms (old max_depth=2)
                levels.append(
                    (c.FPDFFormObj_CountObjects(obj), functools.partial(c.FPDFFormObj_GetObject, obj), level + 1)
                )
                continue
            if kind != image and (kind != path or paths >= limit):
                continue
            paths += kind == path
            if not bounds(obj, *refs):
                continue
            w, h = x1.value - x0.value, y1.value - y0.value
            box = space.box(x0.value, y0.value, x1.value, y1.value)
            if kind == image:
                figures.append(box)
            elif min(w, h) <= 3 and max(w, h) > 3 * max(min(w, h), 0.5):
                rules.append(box)
    return figures, rules


def _vertical_scale(obj: Any, matrix: Any) -> float:
    """How much a text object's matrix stretches its text upright (1 where it has none)."""
    import ctypes

    import pypdfium2.raw as c

    if not obj or not c.FPDFPageObj_GetMatrix(obj, ctypes.byref(matrix)):
        return 1.0
    scale = math.hypot(matrix.c, matrix.d)
    return scale if scale > 0 else 1.0


def _gapped_lines(lines: list[Line]) -> int:
    """How many lines hold a gap between words wider than 1.5 times their height: cells side by side. A page
    with fewer than three holds no table that ruling lines do not draw, and is not given to the table finder
    (it costs 20-400 ms a page)."""
    count = 0
    for line in lines:
        words = sorted(line.words, key=lambda w: w.bbox[0])
        gap = 1.5 * max(1.0, line.bbox[3] - line.bbox[1])
        count += any(b.bbox[0] - a.bbox[2] > gap for a, b in zip(words, words[1:], strict=False))
    return count


def _found_tables(
    find_tables: Callable[[float, float, float], list[TableGrid]],
    left: float,
    top: float,
    scale: float,
) -> list[TableGrid] | None:
    """The table finder's tables; None, with a warning, where it is not installed or fails (the layout's own
    rules then find the tables)."""
    global _CAMELOT_MISSING
    if _CAMELOT_MISSING:
        return None
    try:
        return find_tables(left, top, scale)
    except ImportError:
        _CAMELOT_MISSING = True
        log.warning("tables in text layers are found by simple rules: `pip install 'qwenvl[pdf]'` adds camelot")
    except Exception as exc:  # noqa: BLE001 - a finder's bug must not cost the page its text
        log.warning("camelot failed on a page (%s: %s); its tables are found by simple rules", type(exc).__name__, exc)
    return None


def _pdf_text_layer(
    page: Any,
    number: int,
    dpi: float,
    min_chars: int,
    checks: TextLayerOptions,
    find_tables: Callable[[float, float, float], list[TableGrid]] | None = None,
) -> TextLayer | None:
    """A PDF page's text layer in pixels at ``dpi`` and its checks (`PageSource.text_layer`); ``find_tables``
    (the displayed page's left and top edges in points, the scale to pixels) gives its tables when
    ``checks.tables`` is "camelot"."""
    import ctypes

    import pypdfium2.raw as c

    rotation = page.get_rotation() % 360
    textpage = page.get_textpage()
    try:
        n = textpage.count_chars()
        left, bottom, right, top = page.get_cropbox()
        scale = dpi / 72.0
        space = _PageSpace.of(rotation, (left, bottom, right, top), scale)
        width, height = round((right - left) * scale), round((top - bottom) * scale)
        if rotation in (90, 270):
            width, height = height, width
        lines: list[Line] = []
        words: list[Word] = []
        word_chars: list[str] = []
        word_box: list[float] = []
        sizes: list[float] = []
        weights: list[int] = []
        seen = bad = offpage = invisible = 0
        #: text object -> (invisible, font size, weight, symbolic): one font and size per text object
        objects: dict[int | None, tuple[bool, float, int, bool]] = {}

        def end_word() -> None:
            nonlocal offpage
            if word_chars:
                cx, cy = (word_box[0] + word_box[2]) / 2, (word_box[1] + word_box[3]) / 2
                if 0 <= cx <= width and 0 <= cy <= height:
                    words.append(Word("".join(word_chars), tuple(word_box), None))  # type: ignore[arg-type]
                else:  # text outside the visible page
                    offpage += len(word_chars)
                word_chars.clear()

        def end_line() -> None:
            end_word()
            if words:
                box = (
                    min(w.bbox[0] for w in words),
                    min(w.bbox[1] for w in words),
                    max(w.bbox[2] for w in words),
                    max(w.bbox[3] for w in words),
                )
                height = statistics.median(sizes) * scale if sizes else box[3] - box[1]
                known = [w for w in weights if w > 0]
                bold = statistics.median(known) >= 600 if known else None
                lines.append(Line(list(words), box, height, bold))
            words.clear()
            sizes.clear()
            weights.clear()

        word_hidden = word_symbolic = False
        symbolic = symbolic_letters = 0
        flags = ctypes.c_int()
        matrix = c.FS_MATRIX()
        font_name = ctypes.create_string_buffer(128)
        raw = textpage.raw
        unicode_of, generated, unmapped = c.FPDFText_GetUnicode, c.FPDFText_IsGenerated, c.FPDFText_HasUnicodeMapError
        font_size, get_charbox = c.FPDFText_GetFontSize, c.FPDFText_GetCharBox
        cl, cr, cb, ct = ctypes.c_double(), ctypes.c_double(), ctypes.c_double(), ctypes.c_double()
        refs = (ctypes.byref(cl), ctypes.byref(cr), ctypes.byref(cb), ctypes.byref(ct))
        size = 0.0
        for i in range(n):
            ch = chr(unicode_of(raw, i))
            if ch == "\x02":  # pdfium's line-end hyphen (FPDFText_IsHyphen): it gives the rest of the word next,
                continue  # with no break, so the word is whole without it ("irretrie-" "vably": "irretrievably")
            if ch.isspace():
                made = generated(raw, i) == 1
                if ch in "\r\n" and made:
                    if ch == "\n":
                        end_line()
                    continue
                if made or unicodedata.category(ch) == "Zs":
                    end_word()
                    continue
            if not get_charbox(raw, i, *refs):
                continue
            x0, y0, x1, y1 = cl.value, cb.value, cr.value, ct.value
            if x1 <= x0 or y1 <= y0:
                continue
            seen += 1
            # a font without a Unicode map fails at every character: its words are caught at their first one
            if (
                (not ch.isprintable() and unicodedata.category(ch) in _NOT_TEXT)
                or ch == "\ufffd"
                or (not word_chars and unmapped(raw, i))
            ):
                bad += 1
                end_word()
                continue
            if rotation:
                bx0, by0, bx1, by1 = space.box(x0, y0, x1, y1)
            else:
                bx0, by0, bx1, by1 = (x0 - left) * scale, (top - y1) * scale, (x1 - left) * scale, (top - y0) * scale
            if word_chars:
                if bx0 < word_box[0]:
                    word_box[0] = bx0
                if by0 < word_box[1]:
                    word_box[1] = by0
                if bx1 > word_box[2]:
                    word_box[2] = bx1
                if by1 > word_box[3]:
                    word_box[3] = by1
            else:  # a word's render mode, size, weight and font flags: those of its first character's text object
                word_box[:] = (bx0, by0, bx1, by1)
                obj = c.FPDFText_GetTextObject(raw, i)
                key = ctypes.cast(obj, ctypes.c_void_p).value
                facts = objects.get(key)
                if facts is None:
                    c.FPDFText_GetFontInfo(raw, i, font_name, len(font_name), ctypes.byref(flags))
                    weight = int(c.FPDFText_GetFontWeight(raw, i))
                    facts = objects[key] = (
                        bool(obj) and c.FPDFTextObj_GetTextRenderMode(obj) in _INVISIBLE_MODES,
                        # the font size times the object's matrix: a 1 pt font drawn nine times larger is 9 pt
                        float(font_size(raw, i)) * _vertical_scale(obj, matrix),
                        # many embedded fonts declare weight 400 whatever their face: the name tells ("+Arial-Bold")
                        700 if _BOLD_FACE.search(font_name.value.decode("latin-1")) else weight,
                        bool(flags.value & _SYMBOLIC) and not flags.value & _NONSYMBOLIC,
                    )
                word_hidden, size, weight, word_symbolic = facts
                weights.append(weight)
            sizes.append(size)
            if word_hidden:
                invisible += 1
            if word_symbolic:
                symbolic += 1
                symbolic_letters += ch.isalpha()
            word_chars.append(ch)
        end_line()
        if seen < min_chars:
            return None
        figures, rules = _pdf_drawings(page, space)
        rejected = None
        if bad > checks.max_bad_chars * seen:
            rejected = (
                f"{bad} of its {seen} characters ({bad / seen:.0%}) are not text: control, private-use or "
                "replacement characters, or glyphs without a Unicode mapping"
            )
        elif offpage > checks.max_offpage_chars * seen:
            rejected = f"{offpage} of its {seen} characters ({offpage / seen:.0%}) lie outside the page"
        elif seen - bad - offpage < min_chars:
            return None
        verify: list[tuple[tuple[float, float, float, float], str]] = []
        big = [f for f in figures if (f[2] - f[0]) * (f[3] - f[1]) >= 0.25 * width * height]
        over_image = (
            sum(len(w.text) for ln in lines for w in ln.words if any(inside(center(w.bbox), f) for f in big))
            if big
            else 0
        )
        kept = seen - bad - offpage
        # Most producers flag embedded subset fonts symbolic, and their layers are honest: a symbolic layer is
        # doubted when it also reads unlike text (under half letters: glyph numbers read as '"7+%-'), so that
        # a born-digital page costs no OCR.
        garbled = symbolic > 0.5 * kept and symbolic_letters < 0.5 * symbolic
        doubtful = max(invisible, over_image) > 0.5 * kept or garbled
        if rejected is None and checks.sample_lines > 0 and doubtful:
            candidates = [ln for ln in lines if len(ln.text) >= 8] or lines
            step = max(1, len(candidates) // checks.sample_lines)
            verify = [(ln.bbox, ln.text) for ln in candidates[::step][: checks.sample_lines]]
        figures = [f for f in figures if (f[2] - f[0]) * (f[3] - f[1]) < 0.8 * width * height]
        grids: list[TableGrid] | None = None
        if rejected is None and find_tables is not None and checks.tables == "camelot" and kept <= _MAX_TABLE_CHARS:
            grids = []  # a page without cells side by side has no table for the finder
            if _gapped_lines(lines) >= 3:
                # camelot's points: the displayed page's, y up from its bottom edge
                shown_top = {0: top, 90: right - left, 180: top - bottom, 270: right - left}[rotation]
                grids = _found_tables(find_tables, 0.0 if rotation else left, shown_top, scale)
        blocks = assemble(
            RawLayout(width, height, group_lines(lines), rules=rules, figures=figures, grids=grids),
            page_number=number,
            origin="pdf_text",
        )
        return TextLayer(blocks, rejected, verify)
    finally:
        textpage.close()
