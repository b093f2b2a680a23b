"""Tables on a page: where they are and their grid of rows and columns.

On a PDF page's text layer: grids that ruling lines divide into cells (`fully_ruled`) are read by their rules;
the other tables are camelot's (its ``stream`` parser), measured best of the libraries tried on the
olmOCR-bench dev set (bench/olmocr_dev). On page images, and where camelot is not installed, this module's rules
alone: grids of ruling lines, cells split by the empty gaps between words. Text goes into the grid's cells here,
from the backend's own words, so that a table's text is the page's text.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from qwenvl.layout.geometry import Box, center, inside, overlap, right_to_left, union

__all__ = [
    "TableGrid",
    "camelot_tables",
    "cell_bounds",
    "fully_ruled",
    "rule_grids",
    "ruled_bounds",
    "table_rows",
    "trim_prose_rows",
]

#: a table found by text alignment alone whose filled cells hold this many characters or more (their median)
#: is running text set in columns (a two-column page, a list with its numbers), not a table: its cells are lines
#: of text. On the dev set's pages, tables have medians of 1 to 16 characters, text in columns 26 to 72.
PROSE_CHARS = 24
#: camelot's share of empty cells above which what it found is scattered text, not a table
MAX_EMPTY_CELLS = 80.0


@dataclass(frozen=True)
class TableGrid:
    """A table's grid: the edges of its columns (x, left to right) and rows (y, top to bottom), outer edges
    included, in pixels."""

    columns: tuple[float, ...]
    rows: tuple[float, ...]

    @property
    def box(self) -> Box:
        """The table's area: its outer edges."""
        return (self.columns[0], self.rows[0], self.columns[-1], self.rows[-1])


class _Word(Protocol):
    text: str
    bbox: Box


def horizontal(rule: Box) -> bool:
    """Whether a ruling line runs across rather than down."""
    return (rule[2] - rule[0]) > 3 * (rule[3] - rule[1])


def vertical(rule: Box) -> bool:
    """Whether a ruling line runs down rather than across."""
    return (rule[3] - rule[1]) > 3 * (rule[2] - rule[0])


def rule_grids(rules: Sequence[Box]) -> list[Box]:
    """Table areas drawn by ruling lines: connected sets of at least two horizontal and two vertical rules."""
    horiz = [r for r in rules if horizontal(r)]
    vert = [r for r in rules if vertical(r)]
    items = horiz + vert
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a in range(len(items)):
        for b in range(a + 1, len(items)):
            pa, pb = items[a], items[b]
            near_x = overlap(pa[0] - 6, pa[2] + 6, pb[0], pb[2]) > 0
            if near_x and overlap(pa[1] - 6, pa[3] + 6, pb[1], pb[3]) > 0:
                parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for i in range(len(items)):
        groups.setdefault(find(i), []).append(i)
    grids = []
    for members in groups.values():
        nh = sum(1 for i in members if i < len(horiz))
        nv = len(members) - nh
        if nh >= 2 and nv >= 2:
            grids.append(union([items[i] for i in members]))
    return grids


def cell_bounds(
    values: list[tuple[float, float]], rules: list[float], min_gap: float, span: tuple[float, float] | None = None
) -> list[float]:
    """Boundaries between rows or columns: the rules inside ``span`` (the table's extent on that axis; a frame
    drawn around a table divides nothing) when there are any, else the empty gaps between ``values``."""
    lines: list[float] = []  # the rules' distinct positions (a rule drawn in pieces, or twice, is one line)
    for at in sorted(rules):
        if (span is None or span[0] + 4 < at < span[1] - 4) and (not lines or at - lines[-1] > 3):
            lines.append(at)
    if lines:
        return lines
    spans = sorted(values)
    bounds: list[float] = []
    end = spans[0][1]
    for start, stop in spans[1:]:
        if start - end >= min_gap:
            bounds.append((start + end) / 2)
        end = max(end, stop)
    return bounds


def fully_ruled(area: Box, rules: Sequence[Box], words: Sequence[Box]) -> bool:
    """Whether ruling lines divide ``area`` into its cells: a rule inside its frame running (in pieces or whole)
    at least 80% of its height, one running 80% of its width, and no band between horizontal rules holding
    five or more rows of text that reach into two or more columns (``words``: the boxes of the words in the
    area; a cell's wrapped text reaches into one). Rules that frame a table, or divide only its header or its
    column groups, leave the cells to the finder."""
    inner = [r for r in rules if inside(center(r), area, pad=4)]
    positions: list[list[float]] = []
    for axis, kind in ((0, vertical), (1, horizontal)):
        across = 1 - axis  # the axis the rule runs along
        runs: dict[int, float] = {}
        for r in inner:
            at = (r[axis] + r[axis + 2]) / 2
            if kind(r) and area[axis] + 4 < at < area[axis + 2] - 4:
                runs[round(at / 4)] = runs.get(round(at / 4), 0.0) + r[across + 2] - r[across]
        if not any(run >= 0.8 * (area[across + 2] - area[across]) for run in runs.values()):
            return False
        positions.append(sorted(k * 4.0 for k in runs))
    columns, rows = positions
    bands: dict[int, list[list[Box]]] = {}  # band -> its text rows (words whose centres lie within a row)
    for w in sorted(words, key=lambda w: center(w)[1]):
        cy = center(w)[1]
        band = bands.setdefault(bisect.bisect_left(rows, cy), [])
        if band and band[-1][0][1] <= cy <= band[-1][0][3]:
            band[-1].append(w)
        else:
            band.append([w])
    for band in bands.values():
        spread = sum(1 for row in band if len({bisect.bisect_left(columns, center(w)[0]) for w in row}) >= 2)
        if spread >= 5:
            return False
    return True


def ruled_bounds(words: Sequence[_Word], area: Box, rules: Sequence[Box], line_h: float) -> TableGrid:
    """The grid of a table this module found: its ruling lines inside ``area``, else the gaps between words."""
    inner = [r for r in rules if inside(center(r), area, pad=4)]
    h_rules = [(r[1] + r[3]) / 2 for r in inner if horizontal(r)]
    v_rules = [(r[0] + r[2]) / 2 for r in inner if vertical(r)]
    box = union([area] + [w.bbox for w in words])
    rows = cell_bounds([(w.bbox[1], w.bbox[3]) for w in words], h_rules, 0.2 * line_h, (box[1], box[3]))
    columns = cell_bounds([(w.bbox[0], w.bbox[2]) for w in words], v_rules, 1.2 * line_h, (box[0], box[2]))
    return TableGrid((box[0], *sorted(columns), box[2]), (box[1], *sorted(rows), box[3]))


def table_rows(words: Sequence[_Word], grid: TableGrid, line_h: float) -> list[list[str]]:
    """The cells' texts, row by row; rows and columns with no text are left out. Text goes to cells by phrase
    (the words of one line closer than half their height: "Are specialized legal aid services"): a phrase
    is in the cell under its first word's centre, so that text running past a column edge stays whole, as
    camelot keeps its text lines. A cell's phrases are read line by line, left to right."""
    columns, rows = grid.columns[1:-1], grid.rows[1:-1]
    cells: list[list[list[_Word]]] = [[[] for _ in range(len(columns) + 1)] for _ in range(len(rows) + 1)]
    for phrase in _phrases(words):
        cx, cy = center(phrase[0].bbox)
        cells[bisect.bisect_left(rows, cy)][bisect.bisect_left(columns, cx)].extend(phrase)
    filled = [k for k in range(len(columns) + 1) if any(row[k] for row in cells)]
    out = []
    for row in cells:
        texts = [" ".join(w.text for w in _reading(row[k])) for k in filled]
        if any(texts):
            out.append(texts)
    return out


def trim_prose_rows(grid: TableGrid, words: Sequence[_Word]) -> TableGrid | None:
    """``grid`` without the rows at its top and bottom that are not table rows (a finder's table can take in
    the heading and paragraph lines just above or below it): a row without a gutter (a gap wider than its text
    is high) between two pieces of its text (a heading, a title, a note), or a line of running text (words
    covering 70% or more of a span over half the table's width; cells leave gutters). None when fewer than two
    rows are left. ``words``: those whose centres lie in the grid."""
    rows = grid.rows
    width = grid.columns[-1] - grid.columns[0]
    members: list[list[_Word]] = [[] for _ in range(len(rows) - 1)]
    for w in words:
        members[bisect.bisect_left(rows[1:-1], center(w.bbox)[1])].append(w)

    def text_row(row: list[_Word]) -> bool:
        cells = False  # two pieces of text with a gutter (a gap wider than the text is high) between them
        for line in _lines(row):
            extent = max(w.bbox[2] for w in line) - min(w.bbox[0] for w in line)
            inked = sum(w.bbox[2] - w.bbox[0] for w in line)
            if extent > 0.5 * width and inked >= 0.7 * extent:
                return False
            ordered = sorted(line, key=lambda w: w.bbox[0])
            cells |= any(
                b.bbox[0] - a.bbox[2] > a.bbox[3] - a.bbox[1] for a, b in zip(ordered, ordered[1:], strict=False)
            )
        return cells

    first, last = 0, len(members)
    while first < last and not text_row(members[first]):
        first += 1
    while last > first and not text_row(members[last - 1]):
        last -= 1
    if last - first < 2:
        return None
    return TableGrid(grid.columns, rows[first : last + 1])


def _phrases(words: Sequence[_Word]) -> list[list[_Word]]:
    """Runs of words along a line with gaps under half the words' height."""
    out: list[list[_Word]] = []
    for line in _lines(list(words)):
        for w in line:
            h = w.bbox[3] - w.bbox[1]
            prev = out[-1][-1] if out else None
            # the gap between neighbours, whichever way the line reads
            if prev is not None and prev in line and max(w.bbox[0] - prev.bbox[2], prev.bbox[0] - w.bbox[2]) < 0.5 * h:
                out[-1].append(w)
            else:
                out.append([w])
    return out


def _lines(words: list[_Word]) -> list[list[_Word]]:
    """Words in lines (a word whose centre lies within the line's height joins it), top to bottom, each in
    reading order (left to right, or right to left in Arabic or Hebrew script)."""
    lines: list[list[_Word]] = []
    for w in sorted(words, key=lambda w: w.bbox[1]):
        cy = center(w.bbox)[1]
        if lines and lines[-1][0].bbox[1] <= cy <= max(x.bbox[3] for x in lines[-1]):
            lines[-1].append(w)
        else:
            lines.append([w])
    ordered = [sorted(line, key=lambda w: w.bbox[0]) for line in lines]
    return [line[::-1] if right_to_left([w.text for w in line]) else line for line in ordered]


def _reading(words: list[_Word]) -> list[_Word]:
    """A cell's words in reading order: line by line, each left to right."""
    return [w for line in _lines(words) for w in line]


def camelot_tables(
    path: str, page_number: int, password: str | None, *, left: float, top: float, scale: float
) -> list[TableGrid]:
    """The tables camelot's ``stream`` parser finds on page ``page_number`` (1-based) of the PDF at ``path``, in
    pixels (``(x - left) * scale``, ``(top - y) * scale``). Kept: tables of two or more rows and columns, at most
    `MAX_EMPTY_CELLS` percent empty, and not running text set in columns (`PROSE_CHARS`; tables that ruling
    lines divide into cells are read by their rules, see `fully_ruled`). Raises ImportError when camelot is not
    installed.

    Measured on bench/olmocr_dev's table tests with camelot's own cells: hybrid 70 of 77 (it renders each page
    to find ruling lines: 0.2-0.5 s a page), network 57, stream 54, lattice 25; pdfplumber's lines 22 and text
    19. Beside `fully_ruled`'s grids and with this module's cells, stream passes 62 (network 58) at half
    network's cost."""
    import camelot

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "page-1 is image-based", "No tables found in table area ..."
        found = camelot.read_pdf(path, pages=str(page_number), password=password, flavor="stream")
    grids = []
    for table in found:
        grid = _grid(table, left, top, scale)
        if grid is not None and _kept(table):
            grids.append(grid)
    return grids


def _grid(table: Any, left: float, top: float, scale: float) -> TableGrid | None:
    if table.shape[0] < 2 or table.shape[1] < 2:
        return None
    # camelot's edges in PDF points (y up): cols [x0, x1] left to right, rows [y_top, y_bottom] top to bottom
    columns = [(c[0] - left) * scale for c in table.cols] + [(table.cols[-1][1] - left) * scale]
    rows = [(top - r[0]) * scale for r in table.rows] + [(top - table.rows[-1][1]) * scale]
    return TableGrid(tuple(columns), tuple(rows))


def _kept(table: Any) -> bool:
    if float(table.parsing_report.get("whitespace", 0.0)) > MAX_EMPTY_CELLS:
        return False
    lengths = sorted(len(str(text).strip()) for row in table.data for text in row if str(text).strip())
    return bool(lengths) and lengths[len(lengths) // 2] < PROSE_CHARS
