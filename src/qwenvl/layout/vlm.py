"""Layout by a Qwen-VL model: one request per page (or tile), its answer constrained to a JSON schema of blocks."""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from qwenvl.errors import LayoutError
from qwenvl.grounding import box_scale
from qwenvl.layout.choices import cache_fingerprint, refuse_unknown_choices
from qwenvl.layout.export import html_table_rows
from qwenvl.layout.model import BBox, Block, BlockType
from qwenvl.messages import ChatRequest, ChatResult, Image, Message, SamplingOptions, Text
from qwenvl.models import PROFILES, QWEN2_VL, ModelProfile

if TYPE_CHECKING:
    import PIL.Image

__all__ = [
    "PROMPT_VERSION",
    "VLMLayoutConfig",
    "Tile",
    "blocks_from_result",
    "layout_prompt",
    "layout_request",
    "layout_schema",
    "parse_qwenvl_html",
    "split_tile",
]

#: Changes whenever the prompt or schema changes, so cached pages of an older prompt are not reused.
PROMPT_VERSION = "vlm-layout/3"

_TYPES = [t.value for t in BlockType]

_PROMPT = (
    "Read this document page. List every block on it (title, section_header, paragraph, list_item, table, figure, "
    "caption, formula, page_header, page_footer, page_number, other) in reading order. For each block give its "
    "type, its bounding box {coords} and its text exactly as printed. Write a table's text as an HTML <table> "
    "with <tr> and <td>, a formula block's text as LaTeX, and math inside a paragraph as LaTeX between $ signs. "
    'Answer with JSON only: {{"blocks": [{{"type": ..., "bbox": [x0, y0, x1, y1], "text": ...}}]}}.'
)
# Qwen2.5-VL was trained to parse documents into "QwenVL HTML" (its document-parsing cookbook): every element
# carries data-bbox="x1 y1 x2 y2" (pixels of the image it sees; Qwen3-VL: a 0-1000 grid).
_HTML_SYSTEM = (
    "You are an AI specialized in recognizing and extracting text from images. Your mission is to analyze the "
    "image document and generate the result in QwenVL Document Parser HTML format using specified tags while "
    "maintaining user privacy and data integrity."
)
_HTML_PROMPT = "QwenVL HTML"
_COORDS = {
    "grid": "as [x0, y0, x1, y1] on a 0-1000 grid of the page (0,0 is the top-left corner, 1000,1000 the bottom-right)",
    "pixels": "as [x0, y0, x1, y1] in pixels of the image you see",
}


@dataclass(frozen=True)
class VLMLayoutConfig:
    """How pages are asked of the model.

    ``format``: "json" asks for blocks under a JSON schema (decoding is constrained, so every answer parses);
    "html" asks for the "QwenVL HTML" Qwen2.5-VL was trained to write for documents (free text, parsed
    afterwards: elements with ``data-bbox`` become blocks, a page with none falls back); "olmocr" asks olmOCR-2
    (``allenai/olmOCR-2-7B-1025``) its own way and boxes its markdown by the page's words
    (`qwenvl.layout.olmocr`).
    ``coords``: "grid" for boxes on a 0-1000 grid (how Qwen2-VL and Qwen3-VL were trained to point), "pixels"
    for absolute boxes on the image the model sees (Qwen2.5-VL's training); "auto" (the parser resolves it)
    takes the engine's family convention. ``family`` is the model family's ``model_type`` (a key of
    `qwenvl.models.PROFILES`; None: from the engine, else Qwen2-VL), whose pixel rules size the page as the model
    sees it, which "pixels" boxes are mapped back from. ``min_blocks`` / ``max_blocks`` / ``max_text_chars`` bound the
    schema (None: unbounded). ``max_tile_depth``: how many
    times a page whose answer is cut off by ``max_tokens`` is halved into tiles before it falls back.
    """

    #: the prompts' version, part of the page-cache key (a class attribute, not an option)
    prompt_version: ClassVar[str] = PROMPT_VERSION

    min_pixels: int | None = None
    max_pixels: int | None = None
    max_tokens: int = 4096
    coords: Literal["auto", "grid", "pixels"] = "auto"
    family: str | None = None
    format: Literal["json", "html", "olmocr"] = "json"
    min_blocks: int = 0
    max_blocks: int | None = None
    max_text_chars: int | None = None
    max_tile_depth: int = 2
    prompt: str | None = None
    #: a LoRA adapter the pages are read with (a domain-tuned layout model)
    lora: str | None = None

    def __post_init__(self) -> None:
        refuse_unknown_choices(self)  # format="HTML" or "olmocr" is refused, not read as "json"
        self.profile  # noqa: B018 - an unknown family is refused here, not at the first page

    @property
    def profile(self) -> ModelProfile:
        """The family whose pixel rules apply (Qwen2-VL when ``family`` is None)."""
        if self.family is None:
            return QWEN2_VL
        try:
            return PROFILES[self.family]
        except KeyError:
            raise LayoutError(f"family={self.family!r}: use one of {', '.join(sorted(PROFILES))}") from None

    def fingerprint(self) -> dict[str, Any]:
        """What the page cache key takes from these options (every field, and the prompt's version)."""
        return cache_fingerprint(self)  # type: ignore[no-any-return]


def layout_schema(config: VLMLayoutConfig, max_coord: int | None = None) -> dict[str, Any]:
    """The JSON schema a page's answer is constrained to; ``max_coord`` bounds "pixels" coordinates (the longer
    side of the image as the model sees it)."""
    coord = {"type": "integer", "minimum": 0}
    if config.coords != "pixels":
        coord["maximum"] = 1000
    elif max_coord is not None:
        coord["maximum"] = max_coord
    text: dict[str, Any] = {"type": "string"}
    if config.max_text_chars is not None:
        text["maxLength"] = config.max_text_chars
    blocks: dict[str, Any] = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": _TYPES},
                "bbox": {"type": "array", "items": coord, "minItems": 4, "maxItems": 4},
                "text": text,
            },
            "required": ["type", "bbox", "text"],
            "additionalProperties": False,
        },
    }
    if config.min_blocks:
        blocks["minItems"] = config.min_blocks
    if config.max_blocks is not None:
        blocks["maxItems"] = config.max_blocks
    return {"type": "object", "properties": {"blocks": blocks}, "required": ["blocks"], "additionalProperties": False}


@dataclass(frozen=True)
class Tile:
    """A part of a page image, in page pixels; depth 0 is the whole page."""

    x0: int
    y0: int
    x1: int
    y1: int
    depth: int = 0


def split_tile(tile: Tile, overlap: float = 0.03) -> list[Tile]:
    """The tile halved across its longer side, the halves overlapping by ``overlap`` of that side."""
    w, h = tile.x1 - tile.x0, tile.y1 - tile.y0
    if h >= w:
        mid, pad = tile.y0 + h // 2, int(h * overlap)
        return [
            Tile(tile.x0, tile.y0, tile.x1, mid + pad, tile.depth + 1),
            Tile(tile.x0, mid - pad, tile.x1, tile.y1, tile.depth + 1),
        ]
    mid, pad = tile.x0 + w // 2, int(w * overlap)
    return [
        Tile(tile.x0, tile.y0, mid + pad, tile.y1, tile.depth + 1),
        Tile(mid - pad, tile.y0, tile.x1, tile.y1, tile.depth + 1),
    ]


def layout_prompt(config: VLMLayoutConfig) -> str:
    """The instruction sent with each page image."""
    return (config.prompt or _PROMPT).format(coords=_COORDS["pixels" if config.coords == "pixels" else "grid"])


def layout_request(image: PIL.Image.Image, config: VLMLayoutConfig) -> ChatRequest:
    """The request asking the model for the blocks of ``image`` (a page or a tile)."""
    if config.format == "html":
        return ChatRequest(
            messages=[
                Message("system", _HTML_SYSTEM),
                Message(
                    "user",
                    [
                        Image(image, min_pixels=config.min_pixels, max_pixels=config.max_pixels),
                        Text(config.prompt or _HTML_PROMPT),
                    ],
                ),
            ],
            sampling=SamplingOptions(max_tokens=config.max_tokens, temperature=0.0),
            lora=config.lora,
        )
    prompt = layout_prompt(config)
    max_coord = None
    if config.coords == "pixels":  # a box lies inside the image the model sees
        max_coord = max(config.profile.planned_size(image.width, image.height, config.min_pixels, config.max_pixels))
    return ChatRequest(
        messages=[
            Message("user", [Image(image, min_pixels=config.min_pixels, max_pixels=config.max_pixels), Text(prompt)])
        ],
        sampling=SamplingOptions(max_tokens=config.max_tokens, temperature=0.0),
        response_format=layout_schema(config, max_coord),
        lora=config.lora,
    )


_TAG = re.compile(r"<[^>]+>")


def _table_text(text: str) -> tuple[str, str | None]:
    """(plain text, html) of a table answer: HTML is kept and flattened to rows of tab-separated cells."""
    if "<t" not in text.lower():
        return text, None
    rows = html_table_rows(text)
    if not rows:
        return html_lib.unescape(_TAG.sub(" ", text)).strip(), text
    return "\n".join("\t".join(r) for r in rows), text


def blocks_from_result(
    result: ChatResult,
    tile: Tile,
    config: VLMLayoutConfig,
    *,
    page_number: int,
    page_size: tuple[int, int],
    start: int = 0,
) -> list[Block]:
    """Blocks in page pixels from a parsed answer about ``tile`` of a page of ``page_size`` (width, height)."""
    size = (tile.x1 - tile.x0, tile.y1 - tile.y0)
    convention = "pixels" if config.coords == "pixels" else "grid"
    sx, sy = box_scale(
        convention, size, min_pixels=config.min_pixels, max_pixels=config.max_pixels, profile=config.profile
    )
    items = parse_qwenvl_html(result.text) if config.format == "html" else (result.parsed or {}).get("blocks", [])
    blocks: list[Block] = []
    for i, item in enumerate(items):
        x0, y0, x1, y1 = (float(v) for v in item["bbox"])
        bbox = BBox.of(x0 * sx, y0 * sy, x1 * sx, y1 * sy).shift(tile.x0, tile.y0).clip(*page_size)
        kind = BlockType(item["type"])
        if item.get("html"):
            text, table_html = item["text"], item["html"]
        elif kind is BlockType.TABLE:
            text, table_html = _table_text(item["text"])
        else:
            text, table_html = item["text"], None
        order = start + i
        blocks.append(
            Block(
                id=f"p{page_number}-b{order}",
                type=kind,
                bbox=bbox,
                text=text.strip(),
                html=table_html,
                reading_order=order,
                level=kind.heading_level,
                origin="vlm",
            )
        )
    return blocks


_VOID = {"img", "br", "hr", "input", "meta", "link"}
_HEADINGS = {"h1": BlockType.TITLE, **{f"h{n}": BlockType.SECTION_HEADER for n in range(2, 7)}}
_TAGS = {
    "p": BlockType.PARAGRAPH,
    "li": BlockType.LIST_ITEM,
    "ul": BlockType.LIST_ITEM,
    "ol": BlockType.LIST_ITEM,
    "table": BlockType.TABLE,
    "img": BlockType.FIGURE,
    "figure": BlockType.FIGURE,
    "figcaption": BlockType.CAPTION,
    "caption": BlockType.CAPTION,
    "header": BlockType.PAGE_HEADER,
    "footer": BlockType.PAGE_FOOTER,
    "address": BlockType.OTHER,
    "math": BlockType.FORMULA,
}
_CLASSES = {
    "image": BlockType.FIGURE,
    "chart": BlockType.FIGURE,
    "formula": BlockType.FORMULA,
    "caption": BlockType.CAPTION,
    "header": BlockType.PAGE_HEADER,
    "footer": BlockType.PAGE_FOOTER,
    "page_number": BlockType.PAGE_NUMBER,
    "page-number": BlockType.PAGE_NUMBER,
}
_BBOX = re.compile(r"^\s*(\d+(?:\.\d+)?)[\s,]+(\d+(?:\.\d+)?)[\s,]+(\d+(?:\.\d+)?)[\s,]+(\d+(?:\.\d+)?)\s*$")


class _HTMLBlocks(HTMLParser):
    """Collects the outermost elements carrying a well-formed ``data-bbox``, with their text (and, for tables,
    their HTML)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._open is not None:
            if tag not in _VOID:
                self._depth += 1
            if self._open["kind"] is BlockType.TABLE:
                self._open["html"].append(f"<{tag}>")
            elif tag == "br":
                self._open["text"].append("\n")
            return
        values = dict(attrs)
        match = _BBOX.match(values.get("data-bbox") or "")
        if match is None:
            return
        classes = (values.get("class") or "").lower().split()
        kind = next((_CLASSES[c] for c in classes if c in _CLASSES), None) or _HEADINGS.get(tag) or _TAGS.get(tag)
        item = {
            "type": (kind or BlockType.PARAGRAPH).value,
            "kind": kind or BlockType.PARAGRAPH,
            "bbox": [float(v) for v in match.groups()],
            "text": [],
            "html": [f"<{tag}>"] if kind is BlockType.TABLE else [],
        }
        if tag in _VOID:
            self._emit(item)
            return
        self._open, self._depth = item, 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if self._open is not None and tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._open is None or tag in _VOID:
            return
        if self._open["kind"] is BlockType.TABLE:
            self._open["html"].append(f"</{tag}>")
        self._depth -= 1
        if self._depth == 0:
            self._emit(self._open)
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["text"].append(data)
            if self._open["kind"] is BlockType.TABLE:
                self._open["html"].append(html_lib.escape(data))

    def _emit(self, item: dict[str, Any]) -> None:
        text = " ".join("".join(item["text"]).split()) if item["kind"] is not BlockType.TABLE else ""
        table_html = "".join(item["html"])
        if item["kind"] is BlockType.TABLE:
            text, _ = _table_text(table_html)
        self.items.append({"type": item["type"], "bbox": item["bbox"], "text": text, "html": table_html or None})


def parse_qwenvl_html(text: str) -> list[dict[str, Any]]:
    """The blocks of a "QwenVL HTML" answer: each outermost element with ``data-bbox="x1 y1 x2 y2"``, as
    ``{"type", "bbox", "text", "html"}`` (``html`` for tables), in document order. Elements without a usable box,
    and a cut-off last element, are left out."""
    body = _FENCE_HTML.sub(r"\1", text)
    parser = _HTMLBlocks()
    parser.feed(body)
    parser.close()
    return [item for item in parser.items if item["bbox"][2] > item["bbox"][0] and item["bbox"][3] > item["bbox"][1]]


_FENCE_HTML = re.compile(r"```(?:html)?\s*(.*?)(?:```|$)", re.DOTALL)
