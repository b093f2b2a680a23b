"""The PDF worker's side: the process `qwenvl.layout.pdf_worker` starts, which holds the open documents and
runs every pdfium call (and the table finder) under the worker's memory limit.

It answers messages framed as `qwenvl.layout.pdf_worker` sends them, each with an operation of `_Reader`.
Nothing in the library imports this module; only the worker process runs it.
"""

from __future__ import annotations

import contextlib
import os
import pickle  # noqa: S403 - messages between this process and the process that started it
import shutil
import signal
import tempfile
from typing import IO, Any

from qwenvl.layout.pdf_worker import _HEADER

#: pdfium reads form XObjects nested at most this deep (measured through pypdfium2 5.15: the form one level
#: deeper is left empty); anything drawn deeper is missing from the page
PDFIUM_FORM_DEPTH = 40


class _Reader:
    """The documents open in the worker, and the one page loaded last (loaded once for its text layer and its
    rendering)."""

    def __init__(self) -> None:
        import pypdfium2

        self.pdfium = pypdfium2
        self.docs: dict[int, Any] = {}
        #: each open document's bytes and password (for a library that reads files: `path`)
        self.sources: dict[int, tuple[bytes, str | None]] = {}
        #: where `path` writes documents (made by `main`, removed when the worker ends)
        self.folder = ""
        self.loaded: tuple[int, int, Any, str | None] | None = None
        #: the last rendering, kept until its rows are sent
        self.bitmap: Any = None
        #: (doc, index, dpi, (layer, raw)) of a text layer waiting for the table finder's grids
        self.pending: Any = None

    def _unload(self) -> None:
        if self.loaded is not None:
            self.loaded[2].close()
            self.loaded = None

    def page(self, doc: int, index: int) -> tuple[Any, str | None]:
        """The loaded page and what of its content pdfium could not read."""
        if self.loaded is None or self.loaded[:2] != (doc, index):
            self._unload()
            page = self.docs[doc][index]
            self.loaded = (doc, index, page, _damage(page))
        return self.loaded[2], self.loaded[3]

    def open(self, doc: int, password: str | None, data: bytes) -> None:
        """Opens a document from its bytes (pdfium reads them in place)."""
        self.docs[doc] = self.pdfium.PdfDocument(data, password=password)
        self.sources[doc] = (data, password)

    def path(self, doc: int) -> str:
        """The document as a file in the worker's folder, written at the first call."""
        path = os.path.join(self.folder, f"{doc}.pdf")
        if not os.path.exists(path):
            with open(path + ".part", "wb") as f:
                f.write(self.sources[doc][0])
            os.replace(path + ".part", path)
        return path

    def count(self, doc: int) -> tuple[int, int]:
        """The page count the page tree claims, and the number of the last page that loads (fewer when the tree
        claims pages the file does not have)."""
        pdf = self.docs[doc]
        return len(pdf), _loadable(pdf, len(pdf))

    def size(self, doc: int, index: int) -> tuple[float, float]:
        w, h = self.docs[doc].get_page_size(index)
        return float(w), float(h)

    def text_layer(
        self, doc: int, index: int, dpi: float, min_chars: int, checks: Any, grids: Any
    ) -> tuple[Any, str | None]:
        """The page's text layer (`text_layer.read_text_layer`); one that asks for the table finder is kept
        here, for `finish_text_layer`."""
        from qwenvl.layout.text_layer import read_text_layer

        page, damage = self.page(doc, index)
        read = read_text_layer(page, index + 1, dpi, min_chars, checks, grids)
        self.pending = (doc, index, dpi, read) if read is not None and read[0].tables_wanted else None
        return (read[0] if read is not None else None), damage

    def words(self, doc: int, index: int, dpi: float, checks: Any) -> tuple[Any, str | None]:
        """The page's text-layer words in reading order as (text, box in pixels at ``dpi``), and whether the
        layer passes its checks (trusted); None when the page has no text layer."""
        import dataclasses

        from qwenvl.layout.text_layer import read_text_layer

        page, damage = self.page(doc, index)
        read = read_text_layer(page, index + 1, dpi, 1, dataclasses.replace(checks, tables="rules"), None)
        if read is None:
            return None, damage
        layer, raw = read
        words = [(w.text, tuple(w.bbox)) for w in raw.words()]
        return (words, layer.rejected is None and not layer.verify), damage

    def finish_text_layer(self, doc: int, index: int, dpi: float, grids: Any) -> tuple[Any, str | None]:
        """The text layer `text_layer` kept, assembled with the table finder's ``grids``."""
        from qwenvl.layout.text_layer import finish_text_layer

        if self.pending is None or self.pending[:3] != (doc, index, dpi) or self.pending[3] is None:
            raise LookupError("no text layer waits for its tables (the reader was restarted)")
        layer, raw = self.pending[3]
        self.pending = None
        return finish_text_layer(layer, raw, index + 1, grids), self.page(doc, index)[1]

    def tables(self, doc: int, index: int, dpi: float) -> Any:
        """camelot's tables on the page, in pixels at ``dpi`` of the displayed page."""
        from qwenvl.layout.tables import camelot_tables

        page, _ = self.page(doc, index)
        rotation = page.get_rotation() % 360
        left, bottom, right, top = page.get_cropbox()
        # camelot's points: the displayed page's, y up from its bottom edge
        shown_top = {0: top, 90: right - left, 180: top - bottom, 270: right - left}[rotation]
        password = self.sources[doc][1]
        return camelot_tables(
            self.path(doc), index + 1, password, left=0.0 if rotation else left, top=shown_top, scale=dpi / 72.0
        )

    def render(self, doc: int, index: int, dpi: float) -> tuple[tuple[int, int, int, float, str | None], memoryview]:
        import ctypes

        import pypdfium2.raw as c

        from qwenvl.layout.pages import capped_dpi

        page, damage = self.page(doc, index)
        width_pt, height_pt = page.get_size()
        dpi = capped_dpi(width_pt, height_pt, dpi)
        bitmap = page.render(scale=dpi / 72.0, force_bitmap_format=c.FPDFBitmap_BGR, rev_byteorder=True)
        self.bitmap = bitmap
        rows = (ctypes.c_char * (bitmap.stride * bitmap.height)).from_buffer(bitmap.buffer)
        return (bitmap.width, bitmap.height, bitmap.stride, dpi, damage), memoryview(rows)

    def close(self, doc: int) -> None:
        if self.loaded is not None and self.loaded[0] == doc:
            self._unload()
        pdf = self.docs.pop(doc, None)
        if pdf is not None:
            pdf.close()
        if self.sources.pop(doc, None) is not None:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(self.folder, f"{doc}.pdf"))


def _loadable(pdf: Any, count: int) -> int:
    """The number of the last page whose dictionary loads, looked for from the end (a page tree claiming
    pdfium's most, 1,048,575 pages, costs 0.7 s; pages that do not load amid good ones stay in the count)."""
    for index in range(count - 1, -1, -1):
        try:
            pdf.get_page_size(index)
        except Exception:  # noqa: BLE001, S112 - pdfium's PdfiumError: the page is not there
            continue
        return index + 1
    return 0


def _damage(page: Any) -> str | None:
    """What of the page's content pdfium did not read: forms nested past the depth it reads (it leaves a form
    that deep empty)."""
    import pypdfium2.raw as c

    stack = [(obj, 1) for obj in _forms_of_page(page)]
    while stack:
        form, level = stack.pop()
        if level > PDFIUM_FORM_DEPTH:
            return f"its content is drawn in forms nested over {PDFIUM_FORM_DEPTH} deep, deeper than pdfium reads"
        for i in range(c.FPDFFormObj_CountObjects(form)):
            child = c.FPDFFormObj_GetObject(form, i)
            if c.FPDFPageObj_GetType(child) == c.FPDF_PAGEOBJ_FORM:
                stack.append((child, level + 1))
    return None


def _forms_of_page(page: Any) -> list[Any]:
    import pypdfium2.raw as c

    raw = page.raw
    get, kind, form = c.FPDFPage_GetObject, c.FPDFPageObj_GetType, c.FPDF_PAGEOBJ_FORM
    return [obj for obj in (get(raw, i) for i in range(c.FPDFPage_CountObjects(raw))) if kind(obj) == form]


def _send(out: IO[bytes], message: Any, raw: memoryview | None = None) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(payload)) + payload + _HEADER.pack(len(raw) if raw is not None else 0))
    if raw is not None:
        out.write(raw)
    out.flush()


def _read_message(inp: IO[bytes]) -> tuple[Any, bytes | None] | None:
    head = inp.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    message = pickle.loads(inp.read(_HEADER.unpack(head)[0]))  # noqa: S301 - from the process that started us
    size = _HEADER.unpack(inp.read(_HEADER.size))[0]
    return message, inp.read(size) if size else None


def main(argv: list[str]) -> int:
    """The worker: caps its data memory, then answers calls on stdin/stdout until stdin closes."""
    import resource

    memory = int(argv[0])
    resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller's Ctrl-C is the caller's: it stops this process
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the messages
    inp = os.fdopen(0, "rb")
    reader = _Reader()
    reader.folder = tempfile.mkdtemp(prefix="qwenvl-pdf-")
    try:
        return _serve(reader, inp, out)
    finally:
        shutil.rmtree(reader.folder, ignore_errors=True)


def _serve(reader: _Reader, inp: IO[bytes], out: IO[bytes]) -> int:
    _send(out, ("ready", (os.getpid(), reader.folder)))
    while True:
        received = _read_message(inp)
        if received is None:
            return 0
        (op, args), raw = received
        try:
            result = getattr(reader, op)(*args, *([raw] if raw is not None else []))
        except Exception as exc:  # noqa: BLE001 - every error goes back to the caller, typed by name
            _send(out, ("error", (type(exc).__name__, str(exc))))
            continue
        if op == "render":
            _send(out, ("ok", result[0]), result[1])
        else:
            _send(out, ("ok", result))
        reader.bitmap = None
