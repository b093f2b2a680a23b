"""Scanned and digital documents into layout-aware blocks: typed, boxed, in reading order.

`DocumentParser` reads PDFs (text layer or rendered pages), TIFFs and images with a VLM (Qwen2-VL through any
qwenvl engine), OCR on the CPU (Tesseract, RapidOCR), or both with fallback.
"""

from qwenvl.layout.export import to_markdown
from qwenvl.layout.highlight import crop, highlight
from qwenvl.layout.model import SCHEMA_VERSION, BBox, Block, BlockType, Page, PageUsage, ParsedDocument
from qwenvl.layout.options import OCROptions, PageOptions, ParserOptions, RunOptions, TextLayerOptions, VLMOptions
from qwenvl.layout.pages import DocumentError, open_document, render_page
from qwenvl.layout.pipeline import DocumentParser, PageCache

__all__ = [
    "SCHEMA_VERSION",
    "BBox",
    "Block",
    "BlockType",
    "DocumentError",
    "DocumentParser",
    "OCROptions",
    "PageOptions",
    "ParserOptions",
    "RunOptions",
    "TextLayerOptions",
    "VLMOptions",
    "Page",
    "PageCache",
    "PageUsage",
    "ParsedDocument",
    "crop",
    "highlight",
    "open_document",
    "render_page",
    "to_markdown",
]
