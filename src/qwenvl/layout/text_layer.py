"""A PDF page's text layer, read with pdfium's C calls in the PDF worker process (`pdf_worker`): its words and
lines in pixels of the displayed page (its /Rotate applied), its ruling lines and images, its tables (camelot on
the page, `tables`), the checks that say whether it can be trusted, and its blocks (`analysis.assemble`).
`PageSource.text_layer` asks the worker for it; the pipeline compares doubtful layers with OCR."""

from __future__ import annotations

import difflib
import functools
import logging
import math
import re
import statistics
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qwenvl.layout.analysis import Line, RawLayout, Word, assemble, group_lines
from qwenvl.layout.geometry import Box, center, inside
from qwenvl.layout.model import Block
from qwenvl.layout.options import TextLayerOptions
from qwenvl.layout.tables import TableGrid

__all__ = ["MAX_TABLE_CHARS", "TextLayer", "finish_text_layer", "ocr_agreement", "read_text_layer"]

log = logging.getLogger(__name__)

#: a page with more characters than this is not given to the table finder (camelot's time grows with the square
#: of a page's text: 9,000 characters in 1,000 cells took it 5 s and 400 MB, 27,000 took 70 s and 1.9 GB); its
#: tables are found by the layout's rules
MAX_TABLE_CHARS = 10_000


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
    #: the page holds cells side by side and asks for the table finder: `blocks` is empty until the worker
    #: assembles the page with the finder's grids (`PageSource.text_layer` does both)
    tables_wanted: bool = False


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


def read_text_layer(
    page: Any,
    number: int,
    dpi: float,
    min_chars: int,
    checks: TextLayerOptions,
    grids: list[TableGrid] | None = None,
) -> tuple[TextLayer, RawLayout] | None:
    """A PDF page's text layer in pixels at ``dpi`` and its checks (`PageSource.text_layer`), and what it was
    assembled from; None when the page has none. ``grids``: the tables a finder drew on the page. Where none are
    given and ``checks.tables`` is "camelot", a page with three or more lines holding cells side by side (and at
    most `MAX_TABLE_CHARS` characters) comes back unassembled, ``tables_wanted``, for `finish_text_layer`."""
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
        raw = RawLayout(width, height, group_lines(lines), rules=rules, figures=figures)
        if rejected is None and checks.tables == "camelot" and grids is None:
            if kept <= MAX_TABLE_CHARS and _gapped_lines(lines) >= 3:
                return TextLayer([], rejected, verify, tables_wanted=True), raw
            grids = []  # no table for the finder: no cells side by side, or too much text for it
        raw.grids = grids if rejected is None else None
        return TextLayer(assemble(raw, page_number=number, origin="pdf_text"), rejected, verify), raw
    finally:
        textpage.close()


def finish_text_layer(layer: TextLayer, raw: RawLayout, number: int, grids: list[TableGrid] | None) -> TextLayer:
    """``layer``, which asked for the table finder, assembled with the finder's ``grids`` (None: it did not
    finish; the layout's rules find the tables)."""
    raw.grids = grids
    blocks = assemble(raw, page_number=number, origin="pdf_text")
    return TextLayer(blocks, layer.rejected, layer.verify)


def ocr_agreement(image: Any, scale: float, lines: list[tuple[Box, str]], engine: Any) -> float:
    """How alike (0 to 1, the mean over ``lines``) a text layer's ``lines`` (box in the layer's pixels, text) and
    what OCR ``engine`` reads in their boxes on ``image`` (the page rendered ``scale`` times the layer's pixels):
    the check a doubtful layer (`TextLayer.verify`) must pass before it is used."""
    scores = []
    for box, text in lines:
        pad = 0.4 * (box[3] - box[1])
        crop = image.crop(
            (
                max(0, round((box[0] - pad) * scale)),
                max(0, round((box[1] - pad) * scale)),
                min(image.width, round((box[2] + pad) * scale)),
                min(image.height, round((box[3] + pad) * scale)),
            )
        )
        read = " ".join(w.text for r in engine.read(crop).regions for ln in r.lines for w in ln.words)
        scores.append(difflib.SequenceMatcher(None, _squash(text), _squash(read), autojunk=False).ratio())
    return sum(scores) / len(scores) if scores else 1.0


def _squash(text: str) -> str:
    """Text compared without case and whitespace."""
    return "".join(text.split()).casefold()
