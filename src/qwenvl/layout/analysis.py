"""From words and lines with boxes (OCR or a PDF text layer) to typed blocks in reading order.

The backends give what they know (Tesseract: blocks, paragraphs, lines, words, ruling lines, image regions; a PDF
text layer or RapidOCR: lines only). This module adds what they lack: tables found from ruling lines or from
columns aligned over several lines, list items split at bullets, headings by text height, page headers, footers
and numbers by position, and a reading order that follows columns (a recursive XY-cut whose bands with the same
column gutters are read column by column).
"""

from __future__ import annotations

import bisect
import re
import statistics
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qwenvl.layout.export import rows_to_html
from qwenvl.layout.geometry import Box, right_to_left
from qwenvl.layout.geometry import center as _center
from qwenvl.layout.geometry import inside as _inside
from qwenvl.layout.geometry import overlap as _overlap
from qwenvl.layout.geometry import union as _union
from qwenvl.layout.model import BBox, Block, BlockType, Origin
from qwenvl.layout.tables import (
    TableGrid,
    cell_bounds,
    fully_ruled,
    horizontal,
    rule_grids,
    ruled_bounds,
    table_rows,
    trim_prose_rows,
)

__all__ = ["Line", "RawLayout", "Region", "Word", "assemble", "find_rules", "group_lines", "reading_order"]


#: Tokens that open a list item; OCR reads a round bullet as one of the last three.
_BULLETS = {
    "\u2022",
    "\u00b7",
    "\u25cf",
    "\u25aa",
    "\u25a0",
    "\u25e6",
    "-",
    "\u2013",
    "\u2014",
    "*",
    "\u00a2",
    "\u00ab",
    "\u00b0",
}
_MISREAD_BULLETS = {"\u00a2", "\u00ab", "\u00b0"}
#: Glyphs OCR reads a scanned bullet as that are also text ("®", "©", a lone "e" or "o"): a bullet only where
#: the page uses it as one (two or more lines open with it) or the line below hangs indented under its text
_AMBIGUOUS_BULLETS = {"\u00ae", "\u00a9", "e", "o", "O", "\u00bb", "\u2122"}
#: Section numbers: "2.", "2.1", "2.1.3", "A.", "IV." before a heading's words
_SECTION_NUMBER = re.compile(r"^(\d{1,2}(\.\d{1,2}){0,3}\.?|[A-Z]\.|[IVX]{1,5}\.)$")
_NUMBERED = re.compile(r"^(\(?\d{1,2}[.)]|\(?[a-z][.)])$")
_PAGE_NUMBER = re.compile(r"^(page\s*)?[-\u2013(]?\s*\d{1,4}\s*[-\u2013)]?(\s*(of|/)\s*\d{1,4})?$", re.IGNORECASE)
#: a line that is, opens with or ends with a page number: "7", "Page 7", "Optimized Table Tokenization 9"
_RUNNING = re.compile(
    r"^(page\s*)?[-\u2013(]?\s*\d{1,4}\s*[-\u2013)]?(\s*(of|/)\s*\d{1,4})?$|^\d{1,4}\s+\S|\S\s+\d{1,4}$", re.IGNORECASE
)
#: what makes a line a formula (`_formula`): these and Unicode's math symbols (Sm: + = < > \u00d7 \u2211 \u222b ...),
#: not a hyphen, a slash or a bar ("2019 - 2020", "and/or", the "|" OCR reads off a rule)
_MATH_SYMBOLS = set("=+<>^\u2212")
_MATH_NAMES = {"sin", "cos", "tan", "log", "exp", "lim", "max", "min", "det", "sqrt", "arg"}
_CAPTION = re.compile(r"^(figure|fig\.|table|chart|exhibit)\s*\d+", re.IGNORECASE)


@dataclass
class Word:
    """A recognised word and its box; ``conf`` is 0-1 when known."""

    text: str
    bbox: Box
    conf: float | None = None


@dataclass
class Line:
    """A text line: its words left to right, the text height (font size) when known, whether it is set in
    bold (None: unknown; then it is judged from the ink where the page image is at hand), and whether a rule
    underlines it."""

    words: list[Word]
    bbox: Box
    height: float
    bold: bool | None = None
    underlined: bool = False

    @property
    def text(self) -> str:
        """The words joined by spaces, in reading order (right to left in Arabic or Hebrew script)."""
        if right_to_left([w.text for w in self.words]):
            return " ".join(w.text for w in sorted(self.words, key=lambda w: -w.bbox[2]))
        return " ".join(w.text for w in self.words)


@dataclass
class Region:
    """A group of lines the backend sees as one paragraph; ``hint`` is the backend's type when it has one."""

    lines: list[Line]
    hint: BlockType | None = None

    @property
    def bbox(self) -> Box:
        """The union of the lines' boxes."""
        return _union([line.bbox for line in self.lines])


@dataclass
class RawLayout:
    """What a backend found on a page, before typing and ordering."""

    width: int
    height: int
    regions: list[Region]
    rules: list[Box] = field(default_factory=list)
    figures: list[Box] = field(default_factory=list)
    tables: list[Box] = field(default_factory=list)
    #: the page in grey levels (height x width, 0 black), when the backend read an image: used to find bullets
    #: that OCR drops as noise
    ink: Any = None
    #: tables a table finder drew, with their grids; None where no finder ran. Where one ran, only grids that
    #: ruling lines divide into cells are read besides them (frames, and columns aligned in a region, are the
    #: finder's to judge)
    grids: list[TableGrid] | None = None

    def words(self) -> list[Word]:
        """Every word, region by region and line by line (the backend's reading order)."""
        return [w for region in self.regions for line in region.lines for w in line.words]


def group_lines(lines: Sequence[Line]) -> list[Region]:
    """Paragraph regions from loose lines: a line joins the region above it when it is close below, overlaps it
    horizontally and has a similar height (the first such region, in the order regions were started).

    A sweep from the top: a region is looked up only among those whose boxes share a column strip with the
    line (a grid of strips as wide as the median line), and a region is dropped from the strips once the lines
    have gone too far below it to join it (lines arrive top first). Near-linear: 500,000 one-character lines
    take seconds, where comparing every line with every region took minutes."""
    ordered = sorted(lines, key=lambda ln: (ln.bbox[1], ln.bbox[0]))
    if not ordered:
        return []
    widths = sorted(ln.bbox[2] - ln.bbox[0] for ln in ordered)
    span = max(ln.bbox[2] for ln in ordered) - min(ln.bbox[0] for ln in ordered)
    strip = max(widths[len(widths) // 2], span / 512, 1e-6)  # at most 512 strips
    regions: list[Region] = []
    extent: list[list[float]] = []  # each region's x0, x1 (its lines' union)
    strips: dict[int, list[int]] = {}
    done: set[int] = set()  # regions no later line can join

    def register(k: int, x0: float, x1: float, known: range = range(0)) -> None:
        for cell in range(int(x0 // strip), int(x1 // strip) + 1):
            if cell not in known:
                strips.setdefault(cell, []).append(k)

    for line in ordered:
        x0, top, x1, _ = line.bbox
        best = None
        seen: set[int] = set()
        for cell in range(int(x0 // strip), int(x1 // strip) + 1):
            bucket = strips.get(cell)
            if not bucket:
                continue
            if any(k in done for k in bucket):
                bucket[:] = [k for k in bucket if k not in done]
            for k in bucket:
                if k in seen or (best is not None and k >= best):
                    continue
                seen.add(k)
                last = regions[k].lines[-1]
                gap = top - last.bbox[3]
                if gap > 1.125 * last.height:  # too far below for any line from here on (heights within 1.25x)
                    done.add(k)
                    continue
                h = max(line.height, last.height)
                if not (-0.5 * h <= gap <= 0.9 * h) or h > 1.25 * min(line.height, last.height):
                    continue
                rx0, rx1 = extent[k]
                if _overlap(rx0, rx1, x0, x1) >= 0.5 * min(rx1 - rx0, x1 - x0):
                    best = k
        if best is None:
            regions.append(Region([line]))
            extent.append([x0, x1])
            register(len(regions) - 1, x0, x1)
            continue
        regions[best].lines.append(line)
        rx0, rx1 = extent[best]
        if x0 < rx0 or x1 > rx1:
            extent[best] = [min(rx0, x0), max(rx1, x1)]
            register(best, x0, x1, range(int(rx0 // strip), int(rx1 // strip) + 1))  # the strips it newly reaches
    return regions


# ---- reading order ---------------------------------------------------------------------------------------------


def _split(idx: list[int], boxes: Sequence[Box], axis: int, min_gap: float) -> list[list[int]]:
    """Groups of ``idx`` separated by empty gaps of at least ``min_gap`` along ``axis`` (0: x, 1: y)."""
    order = sorted(idx, key=lambda i: boxes[i][axis])
    groups: list[list[int]] = []
    end = -float("inf")
    for i in order:
        if not groups or boxes[i][axis] - end >= min_gap:
            groups.append([i])
            end = boxes[i][axis + 2]
        else:
            groups[-1].append(i)
            end = max(end, boxes[i][axis + 2])
    return groups


def _gutters(idx: list[int], boxes: Sequence[Box], min_gap: float) -> list[tuple[float, float]]:
    cols = _split(idx, boxes, 0, min_gap)
    return [
        (max(boxes[i][2] for i in left), min(boxes[i][0] for i in right))
        for left, right in zip(cols, cols[1:], strict=False)
    ]


def _spanning(idx: list[int], boxes: Sequence[Box], min_gap: float) -> list[int]:
    """The blocks of ``idx`` that span columns: the gutters are the empty vertical strips between the narrow
    blocks (at most 55% of the area's width, so column text), and a block that crosses one spans it."""
    x0, x1 = min(boxes[i][0] for i in idx), max(boxes[i][2] for i in idx)
    narrow = [i for i in idx if boxes[i][2] - boxes[i][0] <= 0.55 * (x1 - x0)]
    if len(narrow) < 2:
        return []
    gutters = [(g0, g1) for g0, g1 in _gutters(narrow, boxes, min_gap) if x0 < g0 and g1 < x1]
    return [i for i in idx if any(boxes[i][0] < g0 and boxes[i][2] > g1 for g0, g1 in gutters)]


def reading_order(boxes: Sequence[Box], *, min_gap: float = 8.0) -> list[int]:
    """Indices of ``boxes`` in reading order: top to bottom, and column by column where bands share gutters.
    A block that spans the columns (a heading, figure, table or footer across them) cuts the page into bands:
    the columns above it are read, left column first, before it, and those below it after. So does a block
    below columns that end together (a heading under them), where below a shorter column it continues the
    longer one."""

    def crosses(idx: list[int], gutters: list[tuple[float, float]]) -> bool:
        return any(boxes[i][0] < g1 and boxes[i][2] > g0 for i in idx for g0, g1 in gutters)

    def middle(i: int) -> float:
        return (boxes[i][1] + boxes[i][3]) / 2

    def overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(max(a0, b0), min(a1, b1)) for a0, a1 in a for b0, b1 in b if min(a1, b1) > max(a0, b0)]

    def ends_together(idx: list[int]) -> bool:
        """Whether the columns of ``idx`` end at about the same height (within two lines or so)."""
        bottoms = [max(boxes[i][3] for i in col) for col in _split(idx, boxes, 0, min_gap)]
        return len(bottoms) > 1 and max(bottoms) - min(bottoms) <= 4 * min_gap

    def order(idx: list[int]) -> list[int]:
        if len(idx) <= 1:
            return idx
        spans = _spanning(idx, boxes, min_gap)
        if spans:
            out: list[int] = []
            rest = [i for i in idx if i not in spans]
            for span in sorted(spans, key=lambda i: (middle(i), boxes[i][0])):
                above = [i for i in rest if middle(i) < middle(span)]
                rest = [i for i in rest if middle(i) >= middle(span)]
                out += order(above) + [span]
            return out + order(rest)
        bands = _split(idx, boxes, 1, 1.0)
        if len(bands) == 1:
            cols = _split(idx, boxes, 0, min_gap)
            if len(cols) == 1:
                return sorted(idx, key=lambda i: (boxes[i][1], boxes[i][0]))
            return [i for col in cols for i in order(col)]
        sections: list[tuple[list[int], list[tuple[float, float]]]] = []
        band_gutters = [_gutters(band, boxes, min_gap) for band in bands]
        for k, (band, gutters) in enumerate(zip(bands, band_gutters, strict=True)):
            if sections and sections[-1][1]:
                prev_idx, prev_g = sections[-1]
                shared = overlap(prev_g, gutters)
                # a band with no gutters continues a column (one column ran longer than the others) unless
                # every column ended just above it and the columns do not go on below it: then it starts what
                # follows the columns (a heading below them)
                after = band_gutters[k + 1] if k + 1 < len(bands) else []
                below = not overlap(prev_g, after) and ends_together(prev_idx)
                if shared or (not gutters and not crosses(band, prev_g) and not below):
                    sections[-1] = (prev_idx + band, shared or prev_g)
                    continue
            sections.append((band, gutters))
        if len(sections) == 1:
            cols = _split(idx, boxes, 0, min_gap)
            if len(cols) > 1:
                return [i for col in cols for i in order(col)]
            return sorted(idx, key=lambda i: (boxes[i][1], boxes[i][0]))
        return [i for section, _ in sections for i in order(section)]

    return order(list(range(len(boxes))))


def find_rules(gray: Any, min_length: int) -> list[Box]:
    """Ruling lines drawn on a page image (``gray``: height x width, 0 black): straight dark runs at least
    ``min_length`` pixels long, horizontal and vertical, each as its box (rows or columns of one stroke
    merged). Text strokes are far shorter than a table's rules; for backends that find no rules themselves."""
    import numpy as np

    dark = np.asarray(gray) < 128
    rules: list[Box] = []
    for axis in (0, 1):  # 0: horizontal rules (runs along each row); 1: vertical (along each column)
        cells = dark if axis == 0 else dark.T
        if cells.shape[1] <= min_length:
            continue
        sums = np.cumsum(cells, axis=1, dtype=np.int32)
        window = sums[:, min_length:] - sums[:, :-min_length]
        full = window == min_length  # a run of min_length dark pixels ends just after each True
        strokes: list[list[int]] = []  # [start, end, first line, last line] of each stroke
        for line in np.flatnonzero(full.any(axis=1)):
            xs = np.flatnonzero(full[line])
            breaks = np.flatnonzero(np.diff(xs) > 1)
            for start, end in zip(np.r_[xs[0], xs[breaks + 1]], np.r_[xs[breaks], xs[-1]], strict=True):
                a, b = int(start) + 1, int(end) + min_length + 1
                stroke = next((k for k in strokes if k[3] >= line - 1 and abs(k[0] - a) <= 3), None)
                if stroke is None:
                    strokes.append([a, b, int(line), int(line)])
                else:
                    stroke[1], stroke[3] = max(stroke[1], b), int(line)
        for a, b, first, last in strokes:
            box = (float(a), float(first), float(b), float(last + 1))
            rules.append(box if axis == 0 else (box[1], box[0], box[3], box[2]))
    return rules


# ---- tables ----------------------------------------------------------------------------------------------------


def _aligned_table(region: Region, line_h: float) -> bool:
    """A region of three or more lines whose words leave two or more gutters through every line: a table without
    ruling lines."""
    if len(region.lines) < 3:
        return False
    words = [w for line in region.lines for w in line.words]
    gutters = cell_bounds([(w.bbox[0], w.bbox[2]) for w in words], [], 1.5 * line_h)
    if len(gutters) < 2:
        return False
    return all(sum(1 for g in gutters if line.bbox[0] < g < line.bbox[2]) >= 1 for line in region.lines)


# ---- typing ----------------------------------------------------------------------------------------------------


def _split_list_items(
    region: Region, page_bullets: set[str] | frozenset[str] = frozenset()
) -> list[tuple[list[Line], bool]]:
    """The region cut before each line that opens with a bullet or item number; (lines, is_item) pieces.
    ``page_bullets``: the ambiguous glyphs this page uses as bullets."""
    pieces: list[tuple[list[Line], bool]] = []
    numbered = sum(1 for line in region.lines if line.words and _NUMBERED.match(line.words[0].text))
    for k, line in enumerate(region.lines):
        first = line.words[0].text if line.words else ""
        opens = first in _BULLETS or (numbered >= 2 and bool(_NUMBERED.match(first)))
        if not opens and first in _AMBIGUOUS_BULLETS and len(line.words) > 1:
            below = region.lines[k + 1] if k + 1 < len(region.lines) else None
            h = line.height or line.bbox[3] - line.bbox[1]
            hanging = below is not None and abs(below.bbox[0] - line.words[1].bbox[0]) <= 0.5 * h
            opens = first in page_bullets or hanging
        if opens or not pieces:
            pieces.append(([line], opens))
        else:
            pieces[-1][0].append(line)
    return pieces


def _page_bullets(regions: Sequence[Region]) -> set[str]:
    """The ambiguous bullet glyphs that open two or more lines of the page, each followed by text."""
    firsts = [ln.words[0].text for r in regions for ln in r.lines if len(ln.words) > 1]
    return {g for g in _AMBIGUOUS_BULLETS if firsts.count(g) >= 2}


def _mark_bold(regions: Sequence[Region], ink: Any) -> None:
    """Sets `Line.bold` where the backend did not know it: strokes (the mean run of dark pixels along each row
    of the line's words) at least 1.3 times as wide as the page's median line's. Bold faces draw wider strokes
    at any size, so this holds on scans where the font is unknown."""
    import numpy as np

    widths: list[tuple[Line, float]] = []
    for region in regions:
        for line in region.lines:
            if line.bold is not None or not line.words:
                continue
            dark = runs = 0
            for word in line.words:
                x0, y0, x1, y1 = (int(round(v)) for v in word.bbox)
                cells = np.asarray(ink[max(0, y0) : y1, max(0, x0) : x1]) < 128
                if cells.size == 0:
                    continue
                dark += int(cells.sum())
                runs += int(np.count_nonzero(cells[:, 1:] & ~cells[:, :-1]) + np.count_nonzero(cells[:, 0]))
            if runs:
                widths.append((line, dark / runs))
    if len(widths) < 3:
        return
    median = statistics.median(w for _, w in widths)
    for line, width in widths:
        line.bold = width >= 1.3 * median


def _mark_underlined(regions: Sequence[Region], rules: Sequence[Box]) -> None:
    """Sets `Line.underlined` where a horizontal rule runs under the line (its top within half a line height of
    the line's foot) across at least 80% of its width: typewritten and plain-text headings are underlined."""
    flat = [r for r in rules if horizontal(r)]
    if not flat:
        return
    for region in regions:
        for line in region.lines:
            x0, y0, x1, y1 = line.bbox
            h = line.height or y1 - y0
            line.underlined = any(
                y1 - 0.3 * h <= r[1] <= y1 + 0.5 * h and _overlap(x0, x1, r[0], r[2]) >= 0.8 * (x1 - x0) for r in flat
            )


def _restore_bullets(regions: list[Region], ink: Any) -> None:
    """Puts back a bullet OCR dropped: a small dark blob just left of a line's first word, centred on the line,
    that is no part of a word OCR read (the full stop ending a line of the column to the left)."""
    import numpy as np

    words = [w.bbox for r in regions for ln in r.lines for w in ln.words]
    for region in regions:
        for line in region.lines:
            if not line.words or line.words[0].text in _BULLETS:
                continue
            x0, y0, _, y1 = line.bbox
            h = y1 - y0
            box = (int(max(0, x0 - 2.0 * h)), int(y0 + 0.15 * h), int(max(0, x0 - 0.15 * h)), int(y1 - 0.15 * h))
            if box[2] - box[0] < 3 or box[3] - box[1] < 3:
                continue
            dark = np.asarray(ink[box[1] : box[3], box[0] : box[2]]) < 110
            if not dark.any():
                continue
            ys, xs = np.nonzero(dark)
            bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
            fill = dark.sum() / (bw * bh)
            shaped = 0.12 * h <= bw <= 0.6 * h and 0.12 * h <= bh <= 0.6 * h and fill >= 0.5 and abs(bw - bh) <= 0.3 * h
            if shaped and not any(w[0] < box[2] and w[2] > box[0] and w[1] < box[3] and w[3] > box[1] for w in words):
                bx0, by0 = box[0] + xs.min(), box[1] + ys.min()
                bullet = Word("\u2022", (float(bx0), float(by0), float(bx0 + bw), float(by0 + bh)), None)
                line.words.insert(0, bullet)
                line.bbox = (float(bx0), y0, line.bbox[2], y1)


def _rejoin_line_fragments(regions: list[Region]) -> list[Region]:
    """One-line regions put back into the line they continue: OCR sometimes boxes a line's last words on their
    own. A fragment continues a line of another region when it sits on the same baseline (within a quarter of
    the line height) at a similar height, starts a word space or so after the line ends (at most 0.8 of the
    line height), and no other region starts at its left edge (then it is a column's text, not a fragment).
    The lines near a fragment are found in a grid and the left edges by bisection, so a page of many regions
    costs about linear time."""
    fragments = sorted((r for r in regions if len(r.lines) == 1), key=lambda r: len(r.lines[0].words))
    if not fragments:
        return regions
    owners = [k for k, region in enumerate(regions) for _ in region.lines]
    lines = [line for region in regions for line in region.lines]
    heights = sorted(line.height or line.bbox[3] - line.bbox[1] for line in lines)
    grid = _BoxGrid([line.bbox for line in lines], 2 * max(heights[len(heights) // 2], 1e-3))
    position = {id(region): k for k, region in enumerate(regions)}
    lefts = sorted(r.bbox[0] for r in regions)
    gone: set[int] = set()  # regions (by position) merged into another
    for fragment in fragments:
        piece = fragment.lines[0]
        h = piece.height or piece.bbox[3] - piece.bbox[1]
        x = piece.bbox[0]
        if h <= 0 or bisect.bisect_right(lefts, x + 0.5 * h) - bisect.bisect_left(lefts, x - 0.5 * h) > 1:
            continue  # another region starts at its left edge (its own edge is one of those counted)
        best: tuple[float, int] | None = None
        for i in grid.near(x - 1.3 * 0.8 * h, piece.bbox[1] - 0.5 * h, x + 0.2 * h, piece.bbox[3] + 0.5 * h):
            line = lines[i]
            if owners[i] == position[id(fragment)] or owners[i] in gone:
                continue
            lh = line.height or line.bbox[3] - line.bbox[1]
            gap = x - line.bbox[2]
            shared = _overlap(line.bbox[1], line.bbox[3], piece.bbox[1], piece.bbox[3])
            edge = min(abs(line.bbox[3] - piece.bbox[3]), abs(line.bbox[1] - piece.bbox[1]))
            if (
                max(lh, h) <= 1.3 * min(lh, h)
                and shared >= 0.6 * min(line.bbox[3] - line.bbox[1], piece.bbox[3] - piece.bbox[1])
                and edge <= 0.25 * max(lh, h)
                and -0.2 * h <= gap <= 0.8 * max(lh, h)
                and (best is None or gap < best[0])
            ):
                best = (gap, i)
        if best is not None:
            line = lines[best[1]]
            line.words.extend(piece.words)
            line.bbox = _union([line.bbox, piece.bbox])
            grid.put(best[1], line.bbox)  # found again where it now ends
            gone.add(position[id(fragment)])
            del lefts[bisect.bisect_left(lefts, x)]
    return [r for k, r in enumerate(regions) if k not in gone]


def _split_where_column_widens(regions: list[Region]) -> list[Region]:
    """Regions cut where their text leaves a column for the full width: a line that starts more than four line
    heights left of the line above and is at least 1.3 times as wide (OCR runs a column's paragraph on into
    the full-width lines below the column, over what sits beside it: a figure, its caption)."""
    out: list[Region] = []
    for region in regions:
        start = 0
        for k in range(1, len(region.lines)):
            above, line = region.lines[k - 1], region.lines[k]
            h = line.height or line.bbox[3] - line.bbox[1]
            if above.bbox[0] - line.bbox[0] > 4 * h and line.bbox[2] - line.bbox[0] >= 1.3 * (
                above.bbox[2] - above.bbox[0]
            ):
                out.append(Region(region.lines[start:k], region.hint))
                start = k
        out.append(Region(region.lines[start:], region.hint) if start else region)
    return out


def _emphasised(line: Line) -> bool:
    return bool(line.bold) or line.underlined


def _join_broken_paragraphs(regions: list[Region], body_h: float) -> list[Region]:
    """Regions rejoined where the backend cut a paragraph: the next region starts right below, at the same left
    edge and size, and the one above stops mid-sentence or its last line is full (the next word did not fit)."""

    def right_edge(x0: float) -> float:
        return max(r.bbox[2] for r in regions if abs(r.bbox[0] - x0) <= 1.5 * body_h)

    def wrapped(above: Region, below: Region) -> bool:
        last = above.lines[-1]
        first_word = below.lines[0].words[0].bbox
        return last.bbox[2] + (first_word[2] - first_word[0]) + 0.3 * last.height > right_edge(above.bbox[0])

    out: list[Region] = []
    for region in regions:
        if out:
            above = out[-1]
            a, b = above.bbox, region.bbox
            ha = statistics.median(ln.height for ln in above.lines)
            hb = statistics.median(ln.height for ln in region.lines)
            if (
                -0.3 * body_h <= b[1] - a[3] <= 0.9 * body_h
                and abs(a[0] - b[0]) <= 1.5 * body_h
                and max(ha, hb) <= 1.15 * min(ha, hb)
                and (not above.lines[-1].text.rstrip().endswith((".", "!", "?", ":")) or wrapped(above, region))
                and region.lines[0].words[0].text not in _BULLETS | _AMBIGUOUS_BULLETS
                and not (_emphasised(above.lines[-1]) and not _emphasised(region.lines[0]))  # a heading
            ):
                out[-1] = Region(above.lines + region.lines, above.hint)
                continue
        out.append(region)
    return out


def _wide(ch: str) -> bool:
    """A character of a script written without spaces between words (CJK ideographs, kana, full-width signs)."""
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _join_lines(texts: Sequence[str]) -> str:
    """Lines' texts joined into running text: with a space, except where a CJK line wraps onto the next (the
    script puts no spaces between words, so a line break there is no word break)."""
    out = ""
    for text in texts:
        text = text.strip()
        if not text:
            continue
        if out and not (_wide(out[-1]) and _wide(text[0])):
            out += " "
        out += text
    return out


def plain_text(text: str) -> str:
    """Text as a reader writes it: composed characters (NFC) and typographic quote pairs as double quotes (‘‘
    and ’’ are how TeX sets “ and ”)."""
    text = unicodedata.normalize("NFC", text)
    return text.replace("\u2018\u2018", "\u201c").replace("\u2019\u2019", "\u201d")


def _text_of(lines: list[Line], is_item: bool) -> str:
    text = _join_lines([line.text for line in lines])
    if is_item and lines and lines[0].words and lines[0].words[0].text in _MISREAD_BULLETS | _AMBIGUOUS_BULLETS:
        text = "\u2022" + text[len(lines[0].words[0].text) :]
    return plain_text(" ".join(text.split()))


def _confidence(words: Sequence[Word]) -> float | None:
    confs = [w.conf for w in words if w.conf is not None]
    return sum(confs) / len(confs) if confs else None


def _formula(text: str) -> bool:
    """Whether a short block reads as a display formula: a relation or operator among three or more tokens, and
    no word longer than three letters but the names of functions ("a 2 + 8 = 12", "E = mc 2", "f(x) = sin x");
    its symbols stay as they are (LaTeX needs a model: the VLM path writes it)."""
    tokens = text.split()
    if len(tokens) < 3 or not any(
        ch in _MATH_SYMBOLS or (unicodedata.category(ch) == "Sm" and ch not in "|~\u00ac") for ch in text
    ):
        return False
    words = re.findall(r"[^\W\d_]+", text)
    return all(len(w) <= 3 or w.lower() in _MATH_NAMES for w in words) and sum(len(w) for w in words) < len(text)


def _wordlike(text: str) -> bool:
    """At least two letters or digits: a lone "i" or "1" OCR reads off a box's border heads nothing."""
    return sum(c.isalnum() for c in text) >= 2


class _BoxGrid:
    """Boxes hashed into square cells of ``size``, to find the boxes near one without looking at all of them (a
    check of every block against its neighbours stays linear however many blocks a page has)."""

    def __init__(self, boxes: Sequence[Box], size: float) -> None:
        self.boxes = list(boxes)
        self.size = max(size, 1e-3)
        self.cells: dict[tuple[int, int], list[int]] = {}
        self.wide: set[int] = set()  # boxes over more than 1024 cells: near every query
        for i, box in enumerate(self.boxes):
            self._file(i, box, None)

    def _span(self, lo: float, hi: float) -> range:
        return range(int(lo // self.size), int(hi // self.size) + 1)

    def put(self, i: int, box: Box) -> None:
        """Box ``i`` grew to ``box``: filed under the cells it newly reaches."""
        old, self.boxes[i] = self.boxes[i], box
        self._file(i, box, old)

    def _file(self, i: int, box: Box, old: Box | None) -> None:
        if i in self.wide:
            return
        xs, ys = self._span(box[0], box[2]), self._span(box[1], box[3])
        if len(xs) * len(ys) > 1024:
            self.wide.add(i)
            return
        known_x, known_y = (self._span(old[0], old[2]), self._span(old[1], old[3])) if old else (range(0), range(0))
        for cx in xs:
            for cy in ys:
                if cx not in known_x or cy not in known_y:
                    self.cells.setdefault((cx, cy), []).append(i)

    def near(self, x0: float, y0: float, x1: float, y1: float) -> list[int]:
        """The boxes that may overlap the area ``x0, y0, x1, y1``, by index in order (a superset)."""
        xs, ys = self._span(x0, x1), self._span(y0, y1)
        if len(xs) * len(ys) > 4096:
            return list(range(len(self.boxes)))
        found = set(self.wide)
        for cx in xs:
            for cy in ys:
                found.update(self.cells.get((cx, cy), ()))
        return sorted(found)


def _labels(box: Box, others: _BoxGrid, body_h: float) -> bool:
    """Whether the text in ``box`` labels text beside it: another block starts on the same line within six
    body-text heights to its right (a key of a key-value list, a form's field name; not a heading). A heading
    in a column of a two-column page has the next column much further off."""
    return any(
        other is not box
        and 0 <= other[0] - box[2] <= 6 * body_h
        and _overlap(box[1], box[3], other[1], other[3]) >= 0.5 * min(box[3] - box[1], other[3] - other[1])
        for other in (others.boxes[i] for i in others.near(box[2], box[1], box[2] + 6 * body_h, box[3]))
    )


def _heading_level(text: str, *, bold: bool, larger: bool, below: int) -> int | None:
    """The level of a body-size heading, or None for text that is not one. A heading is short (at most 12
    words), does not end as a sentence does, and is set apart by a section number ("2.1", "IV.") or by bold;
    a plain "1." item is a heading only in bold or larger type (else it is a numbered item). ``below``: how
    many larger heading sizes the page has (a bold heading ranks under them)."""
    words = text.split()
    if not 1 <= len(words) <= 12 or text.rstrip().endswith((".", ",", ";")) or not any(c.isalpha() for c in text):
        return None
    number = _SECTION_NUMBER.match(words[0]) if len(words) > 1 else None
    if number is not None and words[1][:1].isupper():
        depth = words[0].rstrip(".").count(".") + 1
        if depth > 1 or bold or larger:
            return 2 + min(3, depth - 1)
    if bold:
        return 2 + min(3, below)
    return None


@dataclass
class _Draft:
    """A block before reading order: its type, box, text, a table's HTML, a heading's level, OCR confidence."""

    kind: BlockType
    box: Box
    text: str
    html: str | None = None
    level: int | None = None
    confidence: float | None = None


@dataclass
class _TextDraft:
    """A text block before typing: what the typing rules look at (its median line height, its line count,
    whether all its lines are emphasised, whether it is set larger than the body as a heading is)."""

    kind: BlockType | None
    box: Box
    text: str
    size: float
    confidence: float | None
    lines: int
    bold: bool
    sized: bool


def assemble(raw: RawLayout, *, page_number: int, origin: Origin) -> list[Block]:
    """Typed blocks in reading order from what a backend found on a page."""
    if raw.ink is not None:
        _restore_bullets(raw.regions, raw.ink)
        _mark_bold(raw.regions, raw.ink)
    _mark_underlined(raw.regions, raw.rules)
    # the body text's height: the median over characters (a CJK line is one "word"; a table cell is a few)
    heights = [
        line.height for r in raw.regions for line in r.lines for w in line.words for _ in w.text if line.height > 0
    ]
    body_h = statistics.median(heights) if heights else 20.0
    drafts: list[_Draft] = []

    # Tables: grids that ruling lines divide into rows and columns are read by their rules; then the grids a
    # finder drew; then, where no finder ran, other ruling-line grids (frames), areas the backend marked, and
    # regions with aligned columns
    drawn = rule_grids(raw.rules)
    all_words = raw.words()
    ruled = [a for a in drawn if fully_ruled(a, raw.rules, [w.bbox for w in all_words if _inside(_center(w.bbox), a)])]
    found = [
        g
        for g in (
            trim_prose_rows(g, [w for w in all_words if _inside(_center(w.bbox), g.box)]) for g in raw.grids or []
        )
        if g is not None
    ]
    grids = [g for g in found if not any(_inside(_center(a), g.box) or _inside(_center(g.box), a) for a in ruled)]
    if raw.grids is None:
        areas = drawn + list(raw.tables)
        areas += [r.bbox for r in raw.regions if r.hint is BlockType.TABLE or _aligned_table(r, body_h)]
    else:
        areas = ruled + list(raw.tables)
    merged: list[Box] = []
    for area in sorted(areas, key=lambda a: -(a[2] - a[0]) * (a[3] - a[1])):
        taken = [g.box for g in grids] + merged
        if not any(_inside(_center(area), m) or _inside(_center(m), area) for m in taken):
            merged.append(area)
    grids.sort(key=lambda g: -(g.box[2] - g.box[0]) * (g.box[3] - g.box[1]))
    grids = [g for k, g in enumerate(grids) if not any(_inside(_center(g.box), o.box) for o in grids[:k])]
    boxes = [g.box for g in grids] + merged
    table_words: list[list[Word]] = [[] for _ in boxes]
    rest: list[Region] = []
    for region in raw.regions:
        kept: list[Line] = []
        for line in region.lines:
            words = []
            for w in line.words:
                home = next((k for k, area in enumerate(boxes) if _inside(_center(w.bbox), area, pad=2)), None)
                if home is None:
                    words.append(w)
                else:
                    table_words[home].append(w)
            if words:
                kept.append(Line(words, _union([w.bbox for w in words]), line.height, line.bold, line.underlined))
        if kept:
            rest.append(Region(kept, region.hint))
    for k, (area, words) in enumerate(zip(boxes, table_words, strict=True)):
        if not words:
            continue
        grid = grids[k] if k < len(grids) else ruled_bounds(words, area, raw.rules, body_h)
        rows = [[plain_text(cell) for cell in row] for row in table_rows(words, grid, body_h)]
        box = _union([area] + [w.bbox for w in words])
        text = "\n".join("\t".join(r) for r in rows)
        drafts.append(_Draft(BlockType.TABLE, box, text, html=rows_to_html(rows), confidence=_confidence(words)))

    for fig in raw.figures:
        drafts.append(_Draft(BlockType.FIGURE, fig, ""))

    rest = _join_broken_paragraphs(_rejoin_line_fragments(_split_where_column_widens(rest)), body_h)
    heading_sizes: list[float] = []
    text_drafts: list[_TextDraft] = []
    bullets = _page_bullets(rest)
    for region in rest:
        for lines, is_item in _split_list_items(region, bullets):
            words = [w for line in lines for w in line.words]
            text = _text_of(lines, is_item)
            if not text:
                continue
            box = _union([line.bbox for line in lines])
            size = statistics.median([line.height for line in lines])
            kind: BlockType | None = BlockType.LIST_ITEM if is_item else None
            # larger than the body text, in at most three lines: a title or a heading
            sized = kind is None and len(lines) <= 3 and size >= 1.15 * body_h and _wordlike(text)
            if sized:
                heading_sizes.append(size)
            bold = all(_emphasised(line) for line in lines)
            text_drafts.append(_TextDraft(kind, box, text, size, _confidence(words), len(lines), bold, sized))
    ranks = sorted({round(s) for s in heading_sizes if s < 1.6 * body_h}, reverse=True)
    text_boxes = _BoxGrid([d.box for d in text_drafts], 2 * body_h)
    content = [d.box for d in text_drafts] + [d.box for d in drafts]  # text, tables and figures
    highest = min((b[1] for b in content), default=0.0)
    lowest = max((b[3] for b in content), default=0.0)
    for draft in text_drafts:
        kind, box, text, size, n_lines, bold = draft.kind, draft.box, draft.text, draft.size, draft.lines, draft.bold
        level = None
        top, bottom = box[1] < 0.06 * raw.height, box[3] > 0.94 * raw.height
        # the page's first or last line in its outer 15% (pages with wide margins, or a frame)
        first = n_lines == 1 and box[1] <= highest and box[3] < 0.15 * raw.height
        last = n_lines == 1 and box[3] >= lowest and box[1] > 0.85 * raw.height
        # text standing in a side margin, turned (taller than wide): a stamp, a "Downloaded from" line
        aside = (box[2] < 0.1 * raw.width or box[0] > 0.9 * raw.width) and box[3] - box[1] > 2 * (box[2] - box[0])
        if kind is None and (top or bottom or first or last) and n_lines <= 2 and _PAGE_NUMBER.match(text):
            kind = BlockType.PAGE_NUMBER  # whatever its size
        elif kind is None and aside:
            kind = BlockType.PAGE_HEADER if box[1] + box[3] < raw.height else BlockType.PAGE_FOOTER
        elif draft.sized:
            kind = BlockType.TITLE if size >= 1.6 * body_h else BlockType.SECTION_HEADER
            level = 1 if kind is BlockType.TITLE else 2 + min(3, ranks.index(round(size)))
        elif (
            kind is None
            and top
            and bold
            and n_lines <= 2
            and (level := _heading_level(text, bold=True, larger=size >= 1.05 * body_h, below=len(ranks)))
        ):
            kind = BlockType.SECTION_HEADER  # an emphasised heading at the top of a page without margins
        elif kind is None and (top or bottom) and n_lines <= 2 and size <= 1.15 * body_h:
            if _PAGE_NUMBER.match(text):
                kind = BlockType.PAGE_NUMBER
            else:
                kind = BlockType.PAGE_HEADER if top else BlockType.PAGE_FOOTER
        elif kind is None and (first or last) and size <= 1.15 * body_h and _RUNNING.search(text):
            # a page number alone, or a running head or foot that carries one ("Optimized Table Tokenization 9")
            if _PAGE_NUMBER.match(text):
                kind = BlockType.PAGE_NUMBER
            else:
                kind = BlockType.PAGE_HEADER if first else BlockType.PAGE_FOOTER
        elif kind is None and n_lines <= 2 and _formula(text):
            kind = BlockType.FORMULA  # a display formula, its symbols as the text layer or OCR gives them
        elif kind is None and n_lines <= 3 and _CAPTION.match(text):
            kind = BlockType.CAPTION
        elif kind is None and n_lines <= 2 and not _labels(box, text_boxes, body_h):
            level = _heading_level(text, bold=bold, larger=size >= 1.05 * body_h, below=len(ranks))
            kind = BlockType.SECTION_HEADER if level is not None else None
        drafts.append(_Draft(kind or BlockType.PARAGRAPH, box, text, level=level, confidence=draft.confidence))

    order = reading_order([d.box for d in drafts], min_gap=max(8.0, 0.5 * body_h))
    blocks = []
    for rank, i in enumerate(order):
        d = drafts[i]
        blocks.append(
            Block(
                id=f"p{page_number}-b{rank}",
                type=d.kind,
                bbox=BBox.of(*d.box).clip(raw.width, raw.height),
                text=d.text,
                html=d.html,
                reading_order=rank,
                level=d.level,
                confidence=d.confidence,
                origin=origin,
            )
        )
    return blocks
