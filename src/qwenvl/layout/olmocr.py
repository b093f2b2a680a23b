"""olmOCR-2 as the loader's VLM: its own interface, its answer read into typed blocks, and boxes from the page.

olmOCR-2 (``allenai/olmOCR-2-7B-1025``, a Qwen2.5-VL-7B fine-tune) answers a page with YAML front matter and
markdown: no coordinates. This module asks it the way it was trained and evaluated, reads the answer into blocks
in the answer's order (headings, paragraphs, list items, tables with their HTML, formulas with their LaTeX,
captions, figures), and boxes each block by aligning its text with the page's own words (the text layer where it
can be trusted, else OCR words of the same render). A block whose text cannot be found on the page gets no box
and says so (`Block.bbox` None, ``unboxed``); no box is made up.

The interface is olmOCR's own, from ``olmocr`` 0.4.27 (github.com/allenai/olmocr):

- the prompt: ``olmocr/prompts/prompts.py``, ``build_no_anchoring_v4_yaml_prompt`` (`PROMPT`), sent as text
  before the image;
- the image: the page rendered with its longest side 1288 pixels (``pipeline.py``, ``--target_longest_image_dim``
  1288), sent whole (no resizing below the processor's own limits);
- sampling: temperature 0.1 on the first try (``TEMPERATURE_BY_ATTEMPT``), ``max_tokens`` 8000;
- the front matter: ``primary_language``, ``is_rotation_valid``, ``rotation_correction`` (0, 90, 180 or 270),
  ``is_table``, ``is_diagram`` (``olmocr/prompts/prompts.py``, ``PageResponse``);
- rotation: where the page is not upright, the image is turned by ``rotation_correction`` (cumulative, with
  PIL's ``transpose``: 90 is ``ROTATE_90``) and asked again (``pipeline.py``, ``process_page``).
"""

from __future__ import annotations

import html as html_lib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qwenvl.errors import LayoutError
from qwenvl.layout.model import BBox, BlockType, html_table_rows
from qwenvl.messages import ChatRequest, Image, Message, SamplingOptions, Text

if TYPE_CHECKING:
    import PIL.Image

__all__ = [
    "LONGEST_SIDE",
    "MAX_ROTATIONS",
    "MAX_TOKENS",
    "MIN_MATCH",
    "PROMPT",
    "ROTATIONS",
    "TEMPERATURE",
    "AnswerError",
    "FrontMatter",
    "MarkdownBlock",
    "Reading",
    "align_blocks",
    "figure_box",
    "formula_boxes",
    "markdown_blocks",
    "olmocr_request",
    "parse_answer",
    "read_pages",
    "rotate",
    "sized_for_olmocr",
    "unrotate_box",
]

#: olmOCR's v4 YAML prompt, word for word (``build_no_anchoring_v4_yaml_prompt``, olmocr 0.4.27)
PROMPT = (
    "Attached is one page of a document that you must process. "
    "Just return the plain text representation of this document as if you were reading it naturally. "
    "Convert equations to LateX and tables to HTML.\n"
    "If there are any figures or charts, label them with the following markdown syntax "
    "![Alt text describing the contents of the figure](page_startx_starty_width_height.png)\n"
    "Return your output as markdown, with a front matter section on top specifying values for the "
    "primary_language, is_rotation_valid, rotation_correction, is_table, and is_diagram parameters."
)
#: the longest side of the page image, in pixels
LONGEST_SIDE = 1288
#: the first try's temperature, and the answer's token budget
TEMPERATURE = 0.1
MAX_TOKENS = 8000
ROTATIONS = (0, 90, 180, 270)
#: a line repeated this many times in a row, or a tail that is one short piece over and over, is a runaway answer
_RUNAWAY_LINES = 12
_RUNAWAY_TAIL = 400


class AnswerError(LayoutError):
    """An olmOCR answer the page cannot be read from (the page falls back, with this as its reason)."""


@dataclass(frozen=True)
class FrontMatter:
    """The YAML front matter of an olmOCR answer."""

    primary_language: str | None
    is_rotation_valid: bool
    rotation_correction: int
    is_table: bool
    is_diagram: bool


@dataclass(frozen=True)
class MarkdownBlock:
    """A block of the answer's markdown: its type, its plain text, a table's HTML, a heading's level, and a
    figure's box as the answer gives it (x0, y0, x1, y1 in pixels of the image the model saw)."""

    type: BlockType
    text: str
    html: str | None = None
    level: int | None = None
    figure_box: tuple[float, float, float, float] | None = None
    #: a fenced code block (a paragraph of the page, its lines kept)
    code: bool = False


def olmocr_request(image: PIL.Image.Image, *, max_tokens: int = MAX_TOKENS, lora: str | None = None) -> ChatRequest:
    """The request olmOCR-2 was trained on for a page image (rendered with its longest side `LONGEST_SIDE`):
    the prompt, then the image at its own size."""
    pixels = image.width * image.height
    return ChatRequest(
        messages=[Message("user", [Text(PROMPT), Image(image, max_pixels=max(pixels, 56 * 56) * 2)])],
        sampling=SamplingOptions(max_tokens=max_tokens, temperature=TEMPERATURE),
        lora=lora,
    )


def rotate(image: PIL.Image.Image, degrees: int) -> PIL.Image.Image:
    """``image`` turned as olmOCR's pipeline turns a page by a ``rotation_correction`` of ``degrees``."""
    import PIL.Image

    turns = {90: PIL.Image.Transpose.ROTATE_90, 180: PIL.Image.Transpose.ROTATE_180}
    if degrees % 360 == 0:
        return image
    return image.transpose(turns.get(degrees % 360, PIL.Image.Transpose.ROTATE_270))


def unrotate_box(
    box: tuple[float, float, float, float], degrees: int, size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """A box in pixels of the page turned by `rotate` (``degrees``) back on the page as given, of ``size``
    (width, height)."""
    w, h = size
    x0, y0, x1, y1 = box
    d = degrees % 360
    if d == 90:  # turned counter-clockwise: a point (u, v) of the turned image is (w - v, u) of the page
        corners = [(w - y0, x0), (w - y1, x1)]
    elif d == 180:
        corners = [(w - x0, h - y0), (w - x1, h - y1)]
    elif d == 270:  # turned clockwise: (u, v) is (v, h - u)
        corners = [(y0, h - x0), (y1, h - x1)]
    else:
        return box
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    return min(xs), min(ys), max(xs), max(ys)


# ---- the answer -----------------------------------------------------------------------------------------------

_FRONT = re.compile(r"\A\s*---\s*\n(.*?)\n---\s*(?:\n|\Z)", re.DOTALL)


def parse_answer(text: str, finish_reason: str | None = "stop") -> tuple[FrontMatter, str]:
    """The front matter and the markdown of an answer; `AnswerError` saying what is wrong with one that was cut
    off, has no front matter or an invalid one, or runs away repeating itself."""
    if finish_reason == "length":
        raise AnswerError(f"the answer was cut off at max_tokens ({len(text)} characters): olmOCR's answer is whole")
    match = _FRONT.match(text)
    if match is None:
        raise AnswerError("the answer has no YAML front matter (--- ... ---) on top")
    front = _front_matter(match.group(1))
    body = text[match.end() :].strip()
    runaway = _runaway(body)
    if runaway is not None:
        raise AnswerError(runaway)
    return front, body


def _front_matter(yaml_text: str) -> FrontMatter:
    from qwenvl._lazy import require

    yaml = require("yaml", "pdf")
    try:
        data = yaml.safe_load(yaml_text)
    except yaml.YAMLError as exc:
        raise AnswerError(f"the front matter is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise AnswerError(f"the front matter is not a mapping of keys: {yaml_text[:80]!r}")
    missing = [k for k in ("is_rotation_valid", "rotation_correction", "is_table", "is_diagram") if k not in data]
    if missing:
        raise AnswerError(f"the front matter lacks {', '.join(missing)}")
    flags = {k: data[k] for k in ("is_rotation_valid", "is_table", "is_diagram")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise AnswerError(f"the front matter's {key} is {value!r}, not true or false")
    rotation = data["rotation_correction"]
    if rotation not in ROTATIONS or isinstance(rotation, bool):
        raise AnswerError(f"the front matter's rotation_correction is {rotation!r}, not 0, 90, 180 or 270")
    language = data.get("primary_language")
    return FrontMatter(
        primary_language=None if language is None else str(language),
        is_rotation_valid=flags["is_rotation_valid"],
        rotation_correction=int(rotation),
        is_table=flags["is_table"],
        is_diagram=flags["is_diagram"],
    )


def _runaway(body: str) -> str | None:
    """Why ``body`` is a runaway answer (the same line, or a short piece, over and over), or None."""
    lines = [line.strip() for line in body.splitlines() if line.strip()]
    run = 1
    for prev, line in zip(lines, lines[1:], strict=False):
        run = run + 1 if line == prev else 1
        if run >= _RUNAWAY_LINES:
            return f"the answer repeats the line {line[:60]!r} {run} times in a row (a runaway answer)"
    tail = re.sub(r"\s+", " ", body[-_RUNAWAY_TAIL * 2 :])
    if len(tail) >= _RUNAWAY_TAIL:
        for size in range(1, 31):
            piece = tail[-size:]
            if piece.strip() and tail.endswith(piece * (_RUNAWAY_TAIL // size)):
                return f"the answer ends in {piece[:30]!r} repeated over {_RUNAWAY_TAIL} characters (a runaway answer)"
    return None


# ---- markdown into blocks -------------------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+\u2022]|\d{1,3}[.)])\s+")
_FIGURE = re.compile(r"!\[([^\]]*)\]\(page_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)_(\d+(?:\.\d+)?)\.png\)")
_CAPTION = re.compile(r"^(?:figure|fig\.|table|listing|chart|exhibit)\s*[\dIVXivx]+(?:[-.]\d+)*[.:\s]", re.IGNORECASE)
_MATH_OPEN = {"\\[": "\\]", "$$": "$$"}
_MARKUP = re.compile(r"(\*\*|__|`)")


def markdown_blocks(body: str) -> list[MarkdownBlock]:
    """The blocks of an answer's markdown in its order. A table's HTML must be whole (`AnswerError` for a table
    left open or with no rows)."""
    blocks: list[MarkdownBlock] = []
    lines = body.splitlines()
    i = 0
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            text = " ".join(s.strip() for s in paragraph).strip()
            blocks.append(MarkdownBlock(BlockType.PARAGRAPH, _plain(text)))
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            flush()
            i += 1
            continue
        if stripped.lower().startswith("<table"):
            flush()
            j = i
            while j < len(lines) and "</table>" not in lines[j].lower():
                j += 1
            if j == len(lines):
                raise AnswerError(
                    f"a table opened at line {i + 1} of the answer is never closed (<table> without </table>)"
                )
            table = "\n".join(lines[i : j + 1]).strip()
            rows = html_table_rows(table)
            if not rows:
                raise AnswerError(f"the table at line {i + 1} of the answer has no rows it can be read by")
            if table.lower().count("<table") != table.lower().count("</table>"):
                raise AnswerError(f"the table at line {i + 1} of the answer nests tables it does not close")
            blocks.append(MarkdownBlock(BlockType.TABLE, "\n".join("\t".join(r) for r in rows), html=table))
            i = j + 1
            continue
        opener = next((o for o in _MATH_OPEN if stripped.startswith(o)), None)
        if opener is not None:
            flush()
            closer = _MATH_OPEN[opener]
            j, rest = i, stripped[len(opener) :]
            parts = []
            while closer not in rest:
                parts.append(rest)
                j += 1
                if j == len(lines):
                    raise AnswerError(f"a formula opened with {opener} at line {i + 1} of the answer is never closed")
                rest = lines[j].strip()
            parts.append(rest[: rest.index(closer)])
            blocks.append(MarkdownBlock(BlockType.FORMULA, "\n".join(p for p in parts if p).strip()))
            i = j + 1
            continue
        if stripped.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            blocks.append(MarkdownBlock(BlockType.PARAGRAPH, "\n".join(lines[i + 1 : j]).strip(), code=True))
            i = j + 1
            continue
        heading = _HEADING.match(stripped)
        figure = _FIGURE.search(stripped)
        if heading is not None:
            flush()
            level = len(heading.group(1))
            kind = BlockType.TITLE if level == 1 else BlockType.SECTION_HEADER
            blocks.append(MarkdownBlock(kind, _plain(heading.group(2)), level=level))
        elif figure is not None:
            flush()
            x, y, w, h = (float(figure.group(k)) for k in range(2, 6))
            blocks.append(MarkdownBlock(BlockType.FIGURE, figure.group(1).strip(), figure_box=(x, y, x + w, y + h)))
            rest = (stripped[: figure.start()] + stripped[figure.end() :]).strip()
            if rest:
                paragraph.append(rest)
        elif _LIST_ITEM.match(line):
            flush()
            blocks.append(MarkdownBlock(BlockType.LIST_ITEM, _plain(_LIST_ITEM.sub("", line, count=1))))
        else:
            paragraph.append(stripped)
        i += 1
    flush()
    blocks = [b for b in blocks if b.text or b.type is BlockType.FIGURE]
    return [_caption(blocks, k) for k in range(len(blocks))]


def _caption(blocks: list[MarkdownBlock], k: int) -> MarkdownBlock:
    """Block ``k``, typed a caption where it is a paragraph that names a figure or table ("Table 2-2 ...")
    next to a table, a figure or code."""
    block = blocks[k]
    if block.type is not BlockType.PARAGRAPH or not _CAPTION.match(block.text):
        return block
    near = [blocks[j] for j in (k - 1, k + 1) if 0 <= j < len(blocks)]
    if any(b.type in (BlockType.TABLE, BlockType.FIGURE) or b.code for b in near):
        return MarkdownBlock(BlockType.CAPTION, block.text)
    return block


def _plain(text: str) -> str:
    """Markdown emphasis and inline code marks dropped, HTML entities read."""
    return html_lib.unescape(_MARKUP.sub("", text)).strip()


# ---- boxes by alignment ---------------------------------------------------------------------------------------

#: the share of a block's characters that must match the page's words, in order, for it to be boxed there
MIN_MATCH = 0.6


def _key(text: str) -> str:
    """Text as it is compared: letters and digits only, lower case (markup, spacing and punctuation differ
    between an answer and a page's words; compatibility forms are unfolded: "¼" is "1⁄4")."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if ch.isalnum())


def align_blocks(
    blocks: Sequence[MarkdownBlock], words: Sequence[tuple[str, tuple[float, float, float, float]]]
) -> list[tuple[BBox | None, float]]:
    """Per block, its box on the page (the union of the page's words its text matches) and the share of its
    characters matched; (None, share) where under `MIN_MATCH` match (or the block has no text to match). The
    page's ``words`` are (text, box) in reading order. Matching is rapidfuzz's best partial alignment of each
    block's letters and digits against the page's, blocks being looked for from where the previous one ended
    first (answers follow the page's order), then anywhere."""
    from qwenvl._lazy import require

    fuzz = require("rapidfuzz.fuzz", "pdf")
    page = ""
    owner: list[int] = []  # the word each character of ``page`` comes from
    for k, (text, _) in enumerate(words):
        key = _key(text)
        page += key
        owner += [k] * len(key)
    out: list[tuple[BBox | None, float]] = []
    cursor = 0
    for block in blocks:
        key = _key(block.text)
        if not key or not page:
            out.append((None, 0.0))
            continue
        if block.type is BlockType.TABLE:  # cells are read in another order than the page's words run
            cells = [_key(cell) for row in block.text.split("\n") for cell in row.split("\t")]
            out.append(_pieces_box(cells, page, owner, words, fuzz))
            continue
        best = None
        for start in (cursor, 0) if cursor else (0,):
            window = page[start:]
            if not window:
                continue
            found = fuzz.partial_ratio_alignment(key, window) if len(key) <= len(window) else None
            if found is not None and (best is None or found.score > best[0].score):
                best = (found, start)
            if best is not None and best[0].score >= 90:
                break
        if best is None:
            out.append((None, 0.0))
            continue
        found, start = best
        share = found.score / 100 * min(1.0, (found.dest_end - found.dest_start) / max(1, len(key)))
        if share < MIN_MATCH and len(key) >= 2 * _PIECE:
            # the page's words may run through the block in another order (a figure's labels, a raised fraction,
            # the rest of a column in between): found piece by piece, boxed by the pieces that lie together
            pieces = [key[i : i + _PIECE] for i in range(0, len(key), _PIECE)]
            out.append(_pieces_box(pieces, page, owner, words, fuzz))
            continue
        if share < MIN_MATCH:
            out.append((None, share))
            continue
        first, last = start + found.dest_start, start + found.dest_end - 1
        chosen = range(owner[first], owner[last] + 1)
        out.append((BBox.of(*_union([words[k][1] for k in chosen])), share))
        cursor = last + 1
    return out


#: the length (letters and digits) of the pieces a block is looked for in when it is not found whole
_PIECE = 48


def _pieces_box(
    pieces: Sequence[str], page: str, owner: list[int], words: Sequence[tuple[str, Any]], fuzz: Any
) -> tuple[BBox | None, float]:
    """A box from a block's pieces (a table's cells, or stretches of a long block) found each on its own among
    the page's words (three letters or digits at least, matched at 85% or more): the union of the finds in the
    largest run of them that lie close together down the page (a piece met elsewhere on the page stays out);
    and the share of the pieces' characters found. (None, share) under half of `MIN_MATCH`."""
    total = sum(len(p) for p in pieces) or 1
    hits: list[tuple[float, float, float, float]] = []
    found_chars = 0
    for piece in pieces:
        if len(piece) < 3 or len(piece) > len(page):
            continue
        found = fuzz.partial_ratio_alignment(piece, page)
        if found.score < 85:
            continue
        found_chars += len(piece)
        boxes = [words[k][1] for k in range(owner[found.dest_start], owner[found.dest_end - 1] + 1)]
        hits.append(_union(boxes))
    share = found_chars / total
    if not hits or share < MIN_MATCH / 2:
        return None, share
    hits.sort(key=lambda b: b[1])
    height = sorted(b[3] - b[1] for b in hits)[len(hits) // 2]
    runs: list[list[tuple[float, float, float, float]]] = [[hits[0]]]
    for box in hits[1:]:  # a new run where the next find starts well below everything found so far
        if box[1] - max(b[3] for b in runs[-1]) > 4 * max(height, 1.0):
            runs.append([])
        runs[-1].append(box)
    run = max(runs, key=len)
    return BBox.of(*_union(run)), share


def _union(boxes: Sequence[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    """The smallest (x0, y0, x1, y1) holding all of ``boxes``."""
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def formula_boxes(
    blocks: Sequence[MarkdownBlock], boxes: list[BBox | None], page_size: tuple[int, int]
) -> list[BBox | None]:
    """Unboxed formulas given the region between their boxed neighbours above and below (across the width those
    neighbours span): where OCR reads no words, a formula's ink is that gap. Other blocks are left as they are."""
    out = list(boxes)
    for k, block in enumerate(blocks):
        if block.type is not BlockType.FORMULA or out[k] is not None:
            continue
        above = next((out[j] for j in range(k - 1, -1, -1) if out[j] is not None), None)
        below = next((out[j] for j in range(k + 1, len(out)) if out[j] is not None), None)
        top = above.y1 if above is not None else 0.0
        bottom = below.y0 if below is not None else float(page_size[1])
        if bottom - top < 4:
            continue
        spans = [b for b in (above, below) if b is not None]
        x0 = min((b.x0 for b in spans), default=0.0)
        x1 = max((b.x1 for b in spans), default=float(page_size[0]))
        out[k] = BBox.of(x0, top, x1, bottom)
    return out


def figure_box(block: MarkdownBlock, scale: tuple[float, float], degrees: int, size: tuple[int, int]) -> BBox | None:
    """A figure's box from the answer's own coordinates (pixels of the image sent, turned by ``degrees``; the
    image unturned is ``size``), on the page as given, scaled by ``scale`` (x, y) to page pixels."""
    if block.figure_box is None:
        return None
    x0, y0, x1, y1 = unrotate_box(block.figure_box, degrees, size)
    sx, sy = scale
    return BBox.of(x0 * sx, y0 * sy, x1 * sx, y1 * sy)


# ---- pages through the engine ---------------------------------------------------------------------------------

#: how many times a page the model says is turned is turned and asked again (olmOCR's pipeline: its MAX_RETRIES)
MAX_ROTATIONS = 3


@dataclass
class Reading:
    """One page's way through olmOCR-2: the image sent (the page as given, its longest side `LONGEST_SIDE`),
    the turn it is asked at, and at the end its blocks (or why it has none)."""

    image: PIL.Image.Image
    rotation: int = 0
    turns: int = 0
    attempts: int = 0
    front: FrontMatter | None = None
    blocks: list[MarkdownBlock] | None = None
    error: str | None = None


def sized_for_olmocr(image: PIL.Image.Image) -> PIL.Image.Image:
    """``image`` with its longest side `LONGEST_SIDE` (as olmOCR renders a page)."""
    import PIL.Image

    scale = LONGEST_SIDE / max(image.size)
    if abs(scale - 1) < 1e-3:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, PIL.Image.Resampling.LANCZOS)


def read_pages(
    engine: Any,
    images: Sequence[PIL.Image.Image],
    *,
    retries: int = 1,
    lora: str | None = None,
    on_result: Any = None,
) -> list[Reading]:
    """Each page image through olmOCR-2, one engine call per round for all pages: an answer that says the page
    is turned is asked again on the page turned by its ``rotation_correction`` (at most `MAX_ROTATIONS` times),
    an engine error is asked again ``retries`` times; a bad answer ends the page with its reason.
    ``on_result(k, result)`` sees every engine result of page ``k`` (usage)."""
    readings = [Reading(sized_for_olmocr(image)) for image in images]
    todo = list(range(len(readings)))
    while todo:
        requests = []
        for k in todo:
            r = readings[k]
            request = olmocr_request(rotate(r.image, r.rotation), lora=lora)
            requests.append(_fit_max_tokens(engine, request))
        results = engine.generate(requests)
        next_todo = []
        for k, result in zip(todo, results, strict=True):
            r = readings[k]
            if on_result is not None:
                on_result(k, result)
            if result.error is not None:
                r.attempts += 1
                if r.attempts <= retries:
                    next_todo.append(k)
                else:
                    r.error = f"{type(result.error).__name__}: {result.error}"
                continue
            try:
                front, body = parse_answer(result.text, result.finish_reason)
                if not front.is_rotation_valid and front.rotation_correction and r.turns < MAX_ROTATIONS:
                    r.rotation = (r.rotation + front.rotation_correction) % 360
                    r.turns += 1
                    next_todo.append(k)
                    continue
                r.front, r.blocks = front, markdown_blocks(body)
            except AnswerError as exc:
                r.error = f"olmOCR answer: {exc}"
        todo = next_todo
    return readings


def _fit_max_tokens(engine: Any, request: ChatRequest) -> ChatRequest:
    """``request`` with its answer budget cut to what the engine's context leaves after the prompt (olmOCR's
    8000 tokens where they fit)."""
    from dataclasses import replace

    limit = getattr(engine, "max_model_len", None)
    count = getattr(engine, "count_tokens", None)
    if not limit or count is None:
        return request
    try:  # the prompt alone (with the whole budget kept for the answer, it may not fit the context)
        prompt = int(count(replace(request, sampling=replace(request.sampling, max_tokens=1))).prompt_tokens)
    except Exception:  # noqa: BLE001 - the engine says what is wrong with the request when it runs it
        return request
    room = max(16, int(limit) - prompt)
    if room >= request.sampling.max_tokens:
        return request
    return replace(request, sampling=replace(request.sampling, max_tokens=room))
