"""The driver of an in-process vLLM engine: one concern, stepping vLLM and every access to its internals.

`Driver` steps one vLLM ``LLMEngine`` in a thread of its own, hands each output to the sink of its request,
and watches the engine (a watchdog thread): when vLLM's engine-core process dies or a step runs past its
deadline, every pending request fails at once with `EngineDeadError`. Starting and shutting vLLM down are
here too. The parts of vLLM this module reaches past its public API (``LLMEngine.engine_core.resources``,
``engine_core.outputs_queue``, ``LLMEngine.renderer``) are read with ``getattr`` and a default, and were
checked on the vLLM versions in `TESTED_VLLM`; `check_vllm_version` warns on any other.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from qwenvl._lazy import require
from qwenvl.errors import EngineClosedError, EngineDeadError, EngineError

__all__ = ["TESTED_VLLM", "Driver", "check_vllm_version", "deliver", "llm_max_model_len", "shutdown_llm", "start_llm"]

_log = logging.getLogger(__name__)

#: the vLLM releases the driver's use of vLLM's internals was tested on
TESTED_VLLM = ("0.32.0",)


def check_vllm_version(version: str) -> bool:
    """Whether vLLM ``version`` is one the driver was tested on; logs a warning naming them when it is not."""
    release = version.split("+", 1)[0]
    if release in TESTED_VLLM:
        return True
    _log.warning(
        "qwenvl's vLLM driver was tested on vLLM %s, and this is vLLM %s: the engine's death and stall "
        "detection and its shutdown read vLLM internals that may have moved",
        ", ".join(TESTED_VLLM),
        version,
    )
    return False


def start_llm(args: dict[str, Any], model: str) -> Any:
    """A `vllm.LLM` of engine arguments ``args``; `EngineError` saying what to check when it cannot start."""
    vllm = require("vllm", "vllm")
    check_vllm_version(str(getattr(vllm, "__version__", "?")))
    try:
        return vllm.LLM(**args)
    except Exception as exc:
        raise EngineError(
            f"vLLM could not start model {model!r}: {type(exc).__name__}: {str(exc)[:500]}. "
            "Check the model id or folder (offline, pass a local folder or set HF_HUB_OFFLINE=1 with the "
            "model in the cache) and that gpu_memory_utilization fits the free memory."
        ) from exc


def llm_max_model_len(llm: Any) -> int:
    """The context length a started `vllm.LLM` runs with."""
    return int(llm.llm_engine.model_config.max_model_len)


def shutdown_llm(llm: Any, timeout: float) -> None:
    """Shut a `vllm.LLM` down (its renderer and engine core); a shutdown that does not return within
    ``timeout`` seconds is left behind."""

    def shutdown() -> None:
        engine = llm.llm_engine
        renderer = getattr(engine, "renderer", None)
        if renderer is not None:
            renderer.shutdown()
        engine.engine_core.shutdown()

    if sys.is_finalizing():  # the interpreter is exiting (close() from __del__): no thread can start now
        try:
            shutdown()
        except Exception as exc:  # noqa: BLE001 - nothing is left to report it to
            _log.warning("vLLM shutdown at exit failed: %s", exc)
        return
    worker = threading.Thread(target=shutdown, name="qwenvl-vllm-shutdown", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        _log.warning("vLLM did not shut down within %.0f s; leaving it behind", timeout)


class Driver:
    """Steps one vLLM `LLMEngine` in a background thread and hands each output to its request's sink.

    Requests added together in one `add` call reach the scheduler before its next step, as one batch.
    A sink is called from the driver thread with each `RequestOutput`, or with an exception when the engine
    dies; a sink that raises (its consumer is gone, its event loop closed) has its request aborted.

    Every request that enters leaves exactly once: finished, aborted, refused, or failed with the engine.
    A watchdog thread notices when vLLM's engine-core process dies or one step runs past ``stall_timeout``
    seconds; then every pending request fails at once and later calls raise `EngineError`.
    """

    def __init__(self, engine: Any, *, stall_timeout: float = 300.0, watch_interval: float = 0.5) -> None:
        self._engine = engine
        self._engine_lock = threading.Lock()  # one call into vLLM at a time
        self._state = threading.Condition()  # guards the fields below and wakes the driver
        self._sinks: dict[str, Callable[[Any], None]] = {}
        self._to_abort: list[str] = []
        self._closed = False
        self._dead: EngineDeadError | None = None
        self._step_since: float | None = None
        self._stall_timeout = stall_timeout
        self._watch_interval = watch_interval
        self._thread = threading.Thread(target=self._run, name="qwenvl-vllm-driver", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch, name="qwenvl-vllm-watchdog", daemon=True)
        self._watchdog.start()

    # ------------------------------------------------------------------ called by the engine's users

    @property
    def dead(self) -> EngineDeadError | None:
        """Why the engine died, or None while it works."""
        return self._dead

    def check(self) -> None:
        """Raise `EngineClosedError` / `EngineError` when no request can run."""
        if self._closed:
            raise EngineClosedError("the vLLM engine was closed; create a new VLLMEngine.")
        if self._dead is not None:
            raise EngineDeadError(f"{self._dead} Call engine.restart() or create a new VLLMEngine.")

    def add(
        self, items: Sequence[tuple[str, dict[str, Any], Any, Any, Callable[[Any], None]]]
    ) -> list[Exception | None]:
        """Add requests (id, inputs, sampling params, LoRA request, sink); returns, per item, the error vLLM
        raised or None."""
        errors: list[Exception | None] = []
        with self._engine_lock:
            self.check()
            for request_id, inputs, params, lora, sink in items:
                try:
                    self._engine.add_request(request_id, inputs, params, lora_request=lora)
                except Exception as exc:  # a request vLLM refuses fails alone ...
                    errors.append(exc)
                    self._forget(request_id)  # ... and leaves nothing half-added behind
                    continue
                with self._state:
                    self._sinks[request_id] = sink
                errors.append(None)
        with self._state:
            self._state.notify_all()
        return errors

    def abort(self, request_id: str) -> None:
        """Stop a request; its sink gets nothing more. Never blocks: the driver aborts it in vLLM before its
        next step."""
        with self._state:
            if self._sinks.pop(request_id, None) is not None and not self._closed and self._dead is None:
                self._to_abort.append(request_id)
                self._state.notify_all()

    def unfinished(self) -> int:
        """How many requests vLLM has not finished (after pending aborts are applied)."""
        if self._dead is not None or self._closed:
            return 0
        with self._engine_lock:
            self._apply_aborts()
            return int(self._engine.get_num_unfinished_requests())

    def close(self) -> None:
        """Stop stepping; pending requests get an `EngineClosedError`."""
        with self._state:
            self._closed = True
            sinks, self._sinks = list(self._sinks.values()), {}
            self._state.notify_all()
        for sink in sinks:
            deliver(sink, EngineClosedError("the engine was closed while this request ran."))
        self._unblock(EngineClosedError("the engine was closed."))
        self._thread.join(timeout=30)

    # ------------------------------------------------------------------ the driver and the watchdog

    def _forget(self, request_id: str) -> None:
        """Drop whatever vLLM kept of a request it refused half-way (engine lock held)."""
        try:
            self._engine.abort_request([request_id])
        except Exception:  # noqa: S110 - best effort on a request that may not exist
            pass

    def _apply_aborts(self) -> None:
        with self._state:
            ids, self._to_abort = self._to_abort, []
        if ids:
            self._engine.abort_request(ids)

    def _run(self) -> None:
        try:
            while True:
                with self._state:
                    while not self._closed and self._dead is None and not self._sinks and not self._to_abort:
                        self._state.wait(timeout=1.0)
                    if self._closed or self._dead is not None:
                        return
                outputs: list[Any] = []
                with self._engine_lock:
                    if self._dead is not None or self._closed:
                        return
                    self._apply_aborts()
                    if self._engine.has_unfinished_requests():
                        self._step_since = time.monotonic()
                        try:
                            outputs = self._engine.step()
                        finally:
                            self._step_since = None
                    else:
                        self._fail_orphans()
                self._route(outputs)
        except BaseException as exc:  # the engine (or this thread) died: nothing pending may hang
            if not self._closed:
                _log.error("vLLM engine step failed: %s: %s", type(exc).__name__, exc)
            self._die(f"the vLLM engine failed: {type(exc).__name__}: {exc}")

    def _route(self, outputs: Sequence[Any]) -> None:
        ready: list[tuple[str, Callable[[Any], None], Any]] = []
        with self._state:
            for out in outputs:
                sink = self._sinks.get(out.request_id)
                if sink is not None:
                    ready.append((out.request_id, sink, out))
                    if out.finished:
                        del self._sinks[out.request_id]
        for request_id, sink, item in ready:
            if not deliver(sink, item) and not item.finished:
                self.abort(request_id)  # nobody is listening any more

    def _fail_orphans(self) -> None:
        """Requests with a sink that vLLM no longer has would wait for ever: fail them (engine lock held)."""
        with self._state:
            orphans, self._sinks = list(self._sinks.values()), {}
        for sink in orphans:
            deliver(sink, EngineDeadError("vLLM dropped this request without an answer; send it again."))

    def _watch(self) -> None:
        while True:
            time.sleep(self._watch_interval)
            if self._closed or self._dead is not None:
                return
            reason = self._health()
            if reason is not None:
                _log.error("vLLM engine is not healthy: %s", reason)
                self._die(reason)
                return

    def _health(self) -> str | None:
        """Why the engine cannot answer any more, or None."""
        if not self._thread.is_alive():
            return "the vLLM driver thread stopped."
        resources = getattr(getattr(self._engine, "engine_core", None), "resources", None)
        if getattr(resources, "engine_dead", False):
            return "vLLM's engine-core process died."
        manager = getattr(resources, "engine_manager", None)
        for proc in getattr(manager, "processes", None) or []:
            if not proc.is_alive():
                return f"vLLM's engine-core process {proc.name} exited (code {proc.exitcode})."
        since = self._step_since
        if since is not None and time.monotonic() - since > self._stall_timeout:
            return f"one vLLM step has run for over {self._stall_timeout:.0f} s (stall_timeout): the engine is stuck."
        return None

    def _die(self, reason: str) -> None:
        error = EngineDeadError(reason)
        with self._state:
            if self._dead is not None or self._closed:
                return
            self._dead = error
            sinks, self._sinks = list(self._sinks.values()), {}
            self._to_abort = []
            self._state.notify_all()
        for sink in sinks:
            deliver(sink, error)
        self._unblock(error)

    def _unblock(self, error: Exception) -> None:
        """Wake a step blocked on the engine core's output queue (it raises ``error``)."""
        outputs = getattr(getattr(self._engine, "engine_core", None), "outputs_queue", None)
        if outputs is not None and self._step_since is not None:
            outputs.put_nowait(error)


def deliver(sink: Callable[[Any], None], item: Any) -> bool:
    """Call a sink; False when it raised (its consumer is gone)."""
    try:
        sink(item)
    except Exception as exc:
        _log.debug("a request's consumer is gone (%s: %s)", type(exc).__name__, exc)
        return False
    return True
