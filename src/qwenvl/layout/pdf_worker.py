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
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwenvl.errors import LayoutError, PageError, PageLimitError

__all__ = ["PdfLimits", "PdfWorker", "release_document", "worker_for"]

_HEADER = struct.Struct("<Q")
#: the worker's command (not ``-m``: the package imports the module before runpy would run it)
_ENTRY = "import sys; from qwenvl.layout.pdf_reader import main; sys.exit(main(sys.argv[1:]))"


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
