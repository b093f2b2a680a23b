"""PDF pages read by pdfium in a worker process under a memory limit and a deadline per call.

pdfium runs in the caller's process with no limits of its own: a decompression bomb inflates to gigabytes when a
page loads, a page can keep it busy for minutes, and a crash takes the process with it. So every pdfium call of
the loader runs in one worker process (`main` of this module) whose data memory is capped with
``RLIMIT_DATA``. A call past its deadline kills the worker; a page past the memory limit (or one that crashes
pdfium) ends it. Either way that one page fails with `PageLimitError`, the next call starts a fresh worker
(about 0.3 s) and reopens its documents, and the run goes on. The worker is a plain subprocess, not
multiprocessing: it never imports the caller's ``__main__`` (scripts need no ``if __name__ == "__main__"``).

Messages on its pipes: an 8-byte length and a pickle, and for a rendered page an 8-byte length and the raw RGB
rows after it (a 64 MP page is not pickled or copied on the way).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pickle  # noqa: S403 - messages between this process and its own worker
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from qwenvl.errors import LayoutError, PageError, PageLimitError

__all__ = ["PdfLimits", "PdfWorker", "release_document", "worker_for"]

_HEADER = struct.Struct("<Q")
#: the worker's command (not ``-m``: the package imports this module before runpy would run it)
_ENTRY = "import sys; from qwenvl.layout.pdf_worker import main; sys.exit(main(sys.argv[1:]))"
#: pdfium reads form XObjects nested at most this deep (measured through pypdfium2 5.15: the form one level
#: deeper is left empty); anything drawn deeper is missing from the page
PDFIUM_FORM_DEPTH = 40


@dataclass(frozen=True)
class PdfLimits:
    """What reading one PDF page may cost."""

    #: the worker's data memory (the document, pdfium's inflated streams, decoded images, the rendered page)
    memory: int = 1280 << 20
    #: seconds one page's loading, text layer or rendering may take
    timeout: float = 120.0
    #: seconds the worker may take to start and open a document
    start_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not (isinstance(self.memory, int) and self.memory >= 64 << 20):
            raise LayoutError(f"PdfLimits(memory={self.memory!r}): give bytes, at least 64 MiB (64 << 20)")
        for name in ("timeout", "start_timeout"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 < value <= 86_400):
                raise LayoutError(f"PdfLimits({name}={value!r}): give seconds, more than 0 and at most 86400")


class _WorkerDied(Exception):
    """The worker process ended, or went past its deadline (``args[0]``: "ended" or "deadline")."""


class PdfWorker:
    """A pdfium worker process: `call` runs one operation on a document in it, under a deadline, opening the
    document there first when this process has not yet (a new worker, a forked child). A dead worker is
    restarted by the next call. Thread-safe (calls are serialised: pdfium is not thread-safe)."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._open: set[int] = set()  # documents open in the current process
        self._closed: list[int] = []  # documents to close there at the next call (appended without the lock)
        self._folder: str | None = None  # the worker's folder for document files (removed when it is stopped)

    def _start(self, timeout: float) -> subprocess.Popen[bytes]:
        import qwenvl

        env = dict(os.environ)
        root = str(Path(qwenvl.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], root]) if env.get("PYTHONPATH") else root
        env.setdefault("OMP_NUM_THREADS", "1")
        # pandas' Arrow strings (camelot's tables) would reserve a 1 GiB jemalloc pool, most of the data limit
        env["ARROW_DEFAULT_MEMORY_POOL"] = "system"
        self._proc = subprocess.Popen(  # noqa: S603 - this interpreter running this module
            [sys.executable, "-c", _ENTRY, str(self.memory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._open.clear()
        try:
            _, (_, self._folder), _ = self._receive(time.monotonic() + timeout)
        except _WorkerDied as exc:
            ended = self._stop()
            raise PageError(f"the PDF reader process did not start ({exc.args[0]}, {ended})") from None
        return self._proc

    def _stop(self) -> str:
        """Ends the worker; returns how it ended (an exit status or signal name)."""
        proc, self._proc = self._proc, None
        self._open.clear()
        if proc is None:
            return "not running"
        if proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "did not end"
        finally:
            if self._folder is not None:  # what a killed worker could not remove
                shutil.rmtree(self._folder, ignore_errors=True)
                self._folder = None
        if code < 0:
            try:
                return signal.Signals(-code).name
            except ValueError:
                return f"signal {-code}"
        return f"exit status {code}"

    def close(self) -> None:
        """Ends the worker process (a later call starts another)."""
        with self._lock:
            self._stop()

    def release(self, doc: int) -> None:
        """Forgets document ``doc``: it is closed in the worker at the next call (safe from a finalizer)."""
        self._closed.append(doc)

    def call(
        self, op: str, doc: int, source: tuple[bytes, str | None], *args: Any, limits: PdfLimits
    ) -> tuple[Any, bytearray | None]:
        """Runs ``op`` on document ``doc`` (``source``: its bytes and password, sent when the worker does not
        have it open) and returns its result and raw bytes (for renders). Errors pdfium raises come back as
        `PageError`; a call past ``limits.timeout``, past the memory limit or crashing the worker raises
        `PageLimitError` (the worker is stopped; the next call starts another)."""
        with self._lock:
            try:
                if self._proc is None or self._proc.poll() is not None:
                    self._stop()
                    self._start(limits.start_timeout)
                while self._closed:
                    gone = self._closed.pop()
                    if gone in self._open:
                        self._open.discard(gone)
                        self._exchange(("close", (gone,)), None, limits.start_timeout)
                if doc not in self._open:
                    data, password = source
                    self._check(self._exchange(("open", (doc, password)), data, limits.start_timeout))
                    self._open.add(doc)
                return self._check(self._exchange((op, (doc, *args)), None, limits.timeout))
            except _WorkerDied as exc:
                ended = self._stop()
                if exc.args[0] == "deadline":
                    raise PageLimitError(
                        f"took longer than its {limits.timeout:g} s deadline (PdfLimits.timeout); the reader was "
                        "stopped"
                    ) from None
                raise PageLimitError(
                    f"stopped the PDF reader ({ended}): the page needs more than its {self.memory / (1 << 30):.3g} "
                    "GiB memory limit (a decompression bomb or a page too large to draw; PdfLimits.memory) or "
                    "crashes pdfium"
                ) from None
            except PageError:
                raise
            except BaseException:  # an interrupt or a bug mid-exchange: the pipe is out of step, start afresh
                self._stop()
                raise

    def _check(self, answer: tuple[str, Any, bytearray | None]) -> tuple[Any, bytearray | None]:
        status, value, raw = answer
        if status == "error":
            kind, message = value
            if kind == "MemoryError":
                raise PageLimitError(
                    f"needs more than its {self.memory / (1 << 30):.3g} GiB memory limit (PdfLimits.memory)"
                )
            raise PageError(f"{message} ({kind})")
        return value, raw

    def _exchange(self, message: Any, raw: bytes | None, timeout: float) -> tuple[str, Any, bytearray | None]:
        """Sends one message (and raw bytes after it) and reads the answer by ``timeout`` seconds."""
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            proc.stdin.write(_HEADER.pack(len(payload)))
            proc.stdin.write(payload)
            proc.stdin.write(_HEADER.pack(len(raw) if raw is not None else 0))
            if raw is not None:
                proc.stdin.write(raw)
            proc.stdin.flush()
        except OSError:  # a broken pipe: the worker is gone
            raise _WorkerDied("ended") from None
        return self._receive(time.monotonic() + timeout)

    def _receive(self, deadline: float) -> tuple[str, Any, bytearray | None]:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        head = _read_exact(fd, _HEADER.size, deadline)
        status, value = pickle.loads(_read_exact(fd, _HEADER.unpack(head)[0], deadline))  # noqa: S301 - our worker
        size = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))[0]
        return status, value, _read_exact(fd, size, deadline) if size else None


def _read_exact(fd: int, size: int, deadline: float) -> bytearray:
    import selectors

    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    with selectors.DefaultSelector() as selector:  # epoll: no limit on descriptor numbers, unlike select()
        selector.register(fd, selectors.EVENT_READ)
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(min(left, 3600.0)):
                if deadline - time.monotonic() <= 0:
                    raise _WorkerDied("deadline")
                continue
            n = os.readv(fd, [view[got:]])
            if n == 0:
                raise _WorkerDied("ended")
            got += n
    return buf


#: this process's workers, by memory limit and role: "pages" reads pages (text layers, renders); "tables" runs
#: the table finder, apart, so that a page it cannot finish keeps its text
_WORKERS: dict[tuple[int, str], PdfWorker] = {}
_WORKERS_LOCK = threading.Lock()
_IDS = itertools.count(1)


def _forget_workers() -> None:
    """In a forked child: the parent's workers and their pipes are the parent's."""
    global _WORKERS_LOCK
    _WORKERS_LOCK = threading.Lock()
    _WORKERS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)


def worker_for(limits: PdfLimits, role: str = "pages") -> PdfWorker:
    """This process's worker for ``limits.memory`` and ``role`` ("pages" or "tables"; one per memory limit and
    role; each call gives its own deadline)."""
    with _WORKERS_LOCK:
        key = (limits.memory, role)
        if key not in _WORKERS:
            _WORKERS[key] = PdfWorker(limits.memory)
        return _WORKERS[key]


def release_document(limits: PdfLimits, doc: int) -> None:
    """Forgets document ``doc`` in every worker of ``limits`` (safe from a finalizer)."""
    for role in ("pages", "tables"):
        worker_for(limits, role).release(doc)


def new_document_id() -> int:
    """An id for a document opened in a worker (unique in this process)."""
    return next(_IDS)


# ---- the worker's side -----------------------------------------------------------------------------------------


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
