"""`DocumentParser`'s options, grouped by concern, and the page-cache fingerprint derived from them.

Every field is part of the cache key unless its metadata says ``{"cache": False}`` (settings that change how a
run goes, not what a page becomes): so a new field can never leave stale cache entries behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from qwenvl.layout.choices import cache_fingerprint, refuse_unknown_choices
from qwenvl.layout.ocr import OCREngine
from qwenvl.layout.pdf_worker import PdfLimits
from qwenvl.layout.vlm import VLMLayoutConfig
from qwenvl.media import MediaPolicy

__all__ = [
    "Backend",
    "OCROptions",
    "PageOptions",
    "ParserOptions",
    "RunOptions",
    "TextLayerOptions",
    "VLMOptions",
    "cache_fingerprint",
    "refuse_unknown_choices",
]

Backend = Literal["auto", "vlm", "ocr"]
#: how pages are asked of the VLM (prompt, schema bounds, coordinates, pixel budget, tiling, LoRA)
VLMOptions = VLMLayoutConfig
_NOT_CACHED: dict[str, Any] = {"cache": False}


@dataclass(frozen=True)
class PageOptions:
    """How documents are opened and pages rendered."""

    #: resolution of OCR and text-layer pages (VLM pages are rendered to fill the VLM pixel budget)
    dpi: float = 200.0
    #: password of encrypted PDFs
    password: str | None = field(default=None, metadata=_NOT_CACHED)
    #: what may be read (local files, URLs, sizes); None: the default policy with a 1 GiB file limit
    policy: MediaPolicy | None = field(default=None, metadata=_NOT_CACHED)
    #: what reading one PDF page may cost (memory, seconds); a page past them fails alone
    limits: PdfLimits = field(default_factory=PdfLimits, metadata=_NOT_CACHED)


@dataclass(frozen=True)
class OCROptions:
    """How OCR reads pages that have no usable text layer and are not sent to the VLM (or fall back)."""

    #: Tesseract language code(s), e.g. "eng" or "deu+eng"; "chi_sim" uses RapidOCR
    lang: str = "eng"
    #: "auto" (by language), "tesseract", "rapidocr", or an `OCREngine` instance
    engine: str | OCREngine = "auto"
    #: OCR threads (None: up to 8, one per core)
    workers: int | None = field(default=None, metadata=_NOT_CACHED)
    #: a page OCR reads with a lower mean confidence (0 to 1, per character) is not text it can read
    #: (handwriting, damage, drawings): it keeps what OCR read but has status "fallback", saying so
    min_confidence: float = 0.6


@dataclass(frozen=True)
class TextLayerOptions:
    """When a PDF page's text layer is trusted (backend "auto"). A page whose layer fails a check is read from
    its image instead (VLM or OCR), and its `Page.text_layer_rejected` says why."""

    #: the most characters, as a share of the layer's, that may be no text: control, private-use and
    #: replacement characters, glyphs whose font has no Unicode mapping for them
    max_bad_chars: float = 0.02
    #: the most characters, as a share, that may lie outside the page's visible area
    max_offpage_chars: float = 0.1
    #: lines compared with OCR of the page image when most of the text is invisible, lies over an image (a
    #: scan's OCR layer, or text placed where its glyphs are not) or is set in symbolic fonts (codes that need
    #: not be characters) and reads as under half letters; 0 trusts such layers unchecked
    sample_lines: int = 6
    #: the least mean similarity (0 to 1) between those lines and what OCR reads in their boxes
    min_ocr_agreement: float = 0.6
    #: how tables are found in a trusted layer: "camelot" (grids that ruling lines divide into cells by their
    #: rules, the others by camelot's stream parser; camelot-py is in the pdf extra) or "rules" (ruling-line
    #: grids and aligned columns only: faster, weaker on tables without rules)
    tables: Literal["camelot", "rules"] = "camelot"
    #: seconds camelot may take on a page (in a worker of its own, under PdfLimits.memory); past them, or past
    #: the memory, the page keeps its text and its tables are found by the rules
    table_timeout: float = 20.0

    def __post_init__(self) -> None:
        refuse_unknown_choices(self)


@dataclass(frozen=True)
class RunOptions:
    """How a run goes: batching, retries, fallback and progress."""

    #: pages per engine call (pages of all documents are batched together)
    batch_size: int = field(default=32, metadata=_NOT_CACHED)
    #: retries of a page whose VLM request failed
    retries: int = field(default=1, metadata=_NOT_CACHED)
    #: a page the VLM cannot do falls back to OCR (status "fallback") instead of failing
    fallback: bool = True
    #: a progress bar (None: when stderr is a terminal)
    progress: bool | None = field(default=None, metadata=_NOT_CACHED)


@dataclass(frozen=True)
class ParserOptions:
    """All of `DocumentParser`'s options, nested by concern (as docling's pipeline options)."""

    #: "auto": text layer, else VLM when an engine is given, else OCR; "vlm" or "ocr" force one
    backend: Backend = "auto"
    pages: PageOptions = field(default_factory=PageOptions)
    ocr: OCROptions = field(default_factory=OCROptions)
    vlm: VLMOptions = field(default_factory=VLMOptions)
    run: RunOptions = field(default_factory=RunOptions)
    text_layer: TextLayerOptions = field(default_factory=TextLayerOptions)
    #: where finished pages are kept between runs (None: no cache)
    cache_dir: str | os.PathLike[str] | None = field(default=None, metadata=_NOT_CACHED)

    def __post_init__(self) -> None:
        refuse_unknown_choices(self)
