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

import itertools
import os
import pickle  # noqa: S403 - messages between this process and its own worker
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from qwenvl.errors import PageError, PageLimitError

__all__ = ["PdfLimits", "PdfWorker", "worker_for"]

_HEADER = struct.Struct("<Q")
#: the worker's command (not ``-m``: the package imports this module before runpy would run it)
_ENTRY = "import sys; from qwenvl.layout.pdf_worker import main; sys.exit(main(sys.argv[1:]))"
#: pdfium reads form XObjects nested at most this deep (measured through pypdfium2 5.15: the form one level
#: deeper is left empty); anything drawn deeper is missing from the page
PDFIUM_FORM_DEPTH = 40


@dataclass(frozen=True)
class PdfLimits:
    """What reading one PDF page may cost."""

    #: the worker's data memory (pdfium's inflated streams, decoded images, the rendered page) in bytes
    memory: int = 1280 << 20
    #: seconds one page's loading, text layer or rendering may take
    timeout: float = 120.0
    #: seconds the worker may take to start and open a document
    start_timeout: float = 60.0


class _WorkerDied(Exception):
    """The worker process ended or was ended (``reason`` says how)."""


class PdfWorker:
    """A pdfium worker process: `call` runs one operation in it, under its deadline; a dead worker is
    restarted by the next call. Thread-safe (calls are serialised: pdfium is not thread-safe)."""

    def __init__(self, limits: PdfLimits) -> None:
        self.limits = limits
        #: bumped at every start and stop: documents opened in another process must be opened again
        self.generation = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen[bytes]:
        import qwenvl

        env = dict(os.environ)
        root = str(Path(qwenvl.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join([root, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else root
        env.setdefault("OMP_NUM_THREADS", "1")
        proc = subprocess.Popen(  # noqa: S603 - this interpreter running this module
            [sys.executable, "-c", _ENTRY, str(self.limits.memory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._proc = proc
        self.generation += 1
        try:
            self._receive(proc, time.monotonic() + self.limits.start_timeout)
        except _WorkerDied as exc:
            self._stop()
            raise PageError(f"the PDF reader process did not start: {exc}") from None
        return proc

    def _stop(self) -> str:
        """Ends the worker; returns how it ended (an exit status or signal name)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return "not running"
        self.generation += 1  # what was open in it is gone
        if proc.poll() is None:
            proc.kill()
        try:
            code = proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            return "did not end"
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
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

    def call(self, op: str, *args: Any, timeout: float | None = None) -> tuple[Any, bytearray | None]:
        """Runs ``op`` in the worker; returns its result and raw bytes (for renders). Errors pdfium raises come
        back as `PageError`; a call past its deadline, past the memory limit or crashing the worker raises
        `PageLimitError` (and the worker is restarted on the next call)."""
        timeout = self.limits.timeout if timeout is None else timeout
        with self._lock:
            proc = self._proc if self._proc is not None and self._proc.poll() is None else self._start()
            assert proc.stdin is not None
            try:
                payload = pickle.dumps((op, args), protocol=pickle.HIGHEST_PROTOCOL)
                proc.stdin.write(_HEADER.pack(len(payload)) + payload)
                proc.stdin.flush()
                status, value, raw = self._receive(proc, time.monotonic() + timeout)
            except (_WorkerDied, BrokenPipeError, OSError) as exc:
                timed_out = isinstance(exc, _WorkerDied) and exc.args[0] == "deadline"
                ended = self._stop()
                if timed_out:
                    raise PageLimitError(
                        f"took longer than its {timeout:g} s deadline (PdfLimits.timeout); the reader was stopped"
                    ) from None
                gib = self.limits.memory / (1 << 30)
                raise PageLimitError(
                    f"stopped the PDF reader ({ended}): the page needs more than its {gib:.3g} GiB memory limit "
                    "(a decompression bomb or a page too large to draw; PdfLimits.memory) or crashes pdfium"
                ) from None
        if status == "error":
            kind, message = value
            if kind == "MemoryError":
                gib = self.limits.memory / (1 << 30)
                raise PageLimitError(f"needs more than its {gib:.3g} GiB memory limit (PdfLimits.memory)")
            raise PageError(f"{message} ({kind})")
        return value, raw

    def _receive(self, proc: subprocess.Popen[bytes], deadline: float) -> tuple[str, Any, bytearray | None]:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        head = _read_exact(fd, _HEADER.size, deadline)
        message = pickle.loads(_read_exact(fd, _HEADER.unpack(head)[0], deadline))  # noqa: S301 - our worker
        size = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))[0]
        raw = _read_exact(fd, size, deadline) if size else None
        status, value = message
        return status, value, raw


def _read_exact(fd: int, size: int, deadline: float) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _WorkerDied("deadline")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            raise _WorkerDied("deadline")
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise _WorkerDied("ended")
        got += n
    return buf


_WORKERS: dict[PdfLimits, PdfWorker] = {}
_WORKERS_LOCK = threading.Lock()
_OWNER = os.getpid()
_IDS = itertools.count(1)


def worker_for(limits: PdfLimits) -> PdfWorker:
    """The process's worker for ``limits``' memory (one per memory limit; each call gives its own deadline; a
    forked child gets its own)."""
    global _OWNER
    with _WORKERS_LOCK:
        if os.getpid() != _OWNER:  # a forked process must not share its parent's pipes
            _WORKERS.clear()
            _OWNER = os.getpid()
        key = PdfLimits(memory=limits.memory)
        if key not in _WORKERS:
            _WORKERS[key] = PdfWorker(key)
        return _WORKERS[key]


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
        self.loaded: tuple[int, int, Any, str | None] | None = None
        #: the last rendering, kept until its rows are sent
        self.bitmap: Any = None

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

    def open(self, doc: int, data: bytes, password: str | None) -> tuple[int, int]:
        """Opens a document; returns its claimed page count and how many pages it holds up to the last one that
        loads (fewer when the page tree claims pages the file does not have)."""
        pdf = self.pdfium.PdfDocument(data, password=password)
        self.docs[doc] = pdf
        count = len(pdf)
        return count, _loadable(pdf, count)

    def size(self, doc: int, index: int) -> tuple[float, float]:
        w, h = self.docs[doc].get_page_size(index)
        return float(w), float(h)

    def text_layer(self, doc: int, index: int, dpi: float, min_chars: int, checks: Any) -> tuple[Any, str | None]:
        from qwenvl.layout.pages import _pdf_text_layer

        page, damage = self.page(doc, index)
        return _pdf_text_layer(page, index + 1, dpi, min_chars, checks), damage

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


def _loadable(pdf: Any, count: int) -> int:
    """The number of the last page whose dictionary loads, found by bisection when the last claimed one does not
    (a page tree that claims up to a million pages costs 20 look-ups)."""

    def loads(index: int) -> bool:
        try:
            pdf.get_page_size(index)
        except Exception:  # noqa: BLE001 - pdfium's PdfiumError: the page is not there
            return False
        return True

    if count == 0 or loads(count - 1):
        return count
    lo, hi = -1, count - 1  # lo loads (or is before the first page), hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if loads(mid):
            lo = mid
        else:
            hi = mid
    return lo + 1


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


def _read_message(inp: IO[bytes]) -> Any:
    head = inp.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    return pickle.loads(inp.read(_HEADER.unpack(head)[0]))  # noqa: S301 - from the process that started us


def main(argv: list[str]) -> int:
    """The worker: caps its data memory, then answers calls on stdin/stdout until stdin closes."""
    memory = int(argv[0])
    resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the messages
    inp = os.fdopen(0, "rb")
    reader = _Reader()
    _send(out, ("ready", os.getpid()))
    while True:
        message = _read_message(inp)
        if message is None:
            return 0
        op, args = message
        try:
            result = getattr(reader, op)(*args)
        except Exception as exc:  # noqa: BLE001 - every error goes back to the caller, typed by name
            _send(out, ("error", (type(exc).__name__, str(exc))))
            continue
        if op == "render":
            _send(out, ("ok", result[0]), result[1])
        else:
            _send(out, ("ok", result))
        reader.bitmap = None
