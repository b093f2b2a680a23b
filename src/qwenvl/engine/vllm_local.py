"""`VLLMEngine`: Qwen2-VL on vLLM, in this process.

One vLLM engine (`vllm.LLM`'s `LLMEngine`) serves every call path. A driver thread steps it and routes each
output to whoever waits for it: `generate` adds a whole batch at once, so the scheduler sees it exactly as
`LLM.generate` would; `stream`, `agenerate` and `astream` add their requests to the same engine, so sync and
async calls share the model and the KV cache, never loading it twice. Callers of the async methods never
block their event loop: adding requests (which runs the multimodal processor) happens in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from qwenvl._lazy import require
from qwenvl.engine.base import (
    EngineBase,
    EngineDefaults,
    PreparedRequest,
    RequestPreparer,
    check_model_source,
    cpu_bfloat16_emulated,
    cpu_kv_cache_fixed,
    cpu_memory_share,
    error_result,
    finalize,
    resolve_lora,
)
from qwenvl.errors import EngineClosedError, EngineError, QwenVLError, RequestError, RequestTimeoutError
from qwenvl.media import MediaPolicy
from qwenvl.messages import ChatChunk, ChatRequest, ChatResult, SamplingOptions
from qwenvl.models import load_profile

__all__ = ["VLLM_ENGINE_KEYS", "VLLMEngine"]

_log = logging.getLogger(__name__)

#: vLLM engine arguments that may be passed through ``engine_kwargs``.
VLLM_ENGINE_KEYS = frozenset(
    {
        "tokenizer",
        "revision",
        "trust_remote_code",
        "download_dir",
        "quantization",
        "kv_cache_dtype",
        "enforce_eager",
        "max_num_seqs",
        "max_num_batched_tokens",
        "enable_prefix_caching",
        "enable_chunked_prefill",
        "pipeline_parallel_size",
        "data_parallel_size",
        "distributed_executor_backend",
        "cpu_offload_gb",
        "swap_space",
        "mm_processor_cache_gb",
        "mm_encoder_tp_mode",
        "skip_mm_profiling",
        "kv_cache_memory_bytes",
        "structured_outputs_config",
        "compilation_config",
        "enable_lora",
        "max_loras",
        "max_lora_rank",
        "max_cpu_loras",
        "disable_log_stats",
        "served_model_name",
        "hf_overrides",
        "load_format",
    }
)


class _Driver:
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
        self._dead: EngineError | None = None
        self._step_since: float | None = None
        self._stall_timeout = stall_timeout
        self._watch_interval = watch_interval
        self._thread = threading.Thread(target=self._run, name="qwenvl-vllm-driver", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch, name="qwenvl-vllm-watchdog", daemon=True)
        self._watchdog.start()

    # ------------------------------------------------------------------ called by the engine's users

    @property
    def dead(self) -> EngineError | None:
        """Why the engine died, or None while it works."""
        return self._dead

    def check(self) -> None:
        """Raise `EngineClosedError` / `EngineError` when no request can run."""
        if self._closed:
            raise EngineClosedError("the vLLM engine was closed; create a new VLLMEngine.")
        if self._dead is not None:
            raise EngineError(f"{self._dead} Call engine.restart() or create a new VLLMEngine.")

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
            _deliver(sink, EngineClosedError("the engine was closed while this request ran."))
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
            if not _deliver(sink, item) and not item.finished:
                self.abort(request_id)  # nobody is listening any more

    def _fail_orphans(self) -> None:
        """Requests with a sink that vLLM no longer has would wait for ever: fail them (engine lock held)."""
        with self._state:
            orphans, self._sinks = list(self._sinks.values()), {}
        for sink in orphans:
            _deliver(sink, EngineError("vLLM dropped this request without an answer; send it again."))

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
        error = EngineError(reason)
        with self._state:
            if self._dead is not None or self._closed:
                return
            self._dead = error
            sinks, self._sinks = list(self._sinks.values()), {}
            self._to_abort = []
            self._state.notify_all()
        for sink in sinks:
            _deliver(sink, error)
        self._unblock(error)

    def _unblock(self, error: Exception) -> None:
        """Wake a step blocked on the engine core's output queue (it raises ``error``)."""
        outputs = getattr(getattr(self._engine, "engine_core", None), "outputs_queue", None)
        if outputs is not None and self._step_since is not None:
            outputs.put_nowait(error)


def _deliver(sink: Callable[[Any], None], item: Any) -> bool:
    """Call a sink; False when it raised (its consumer is gone)."""
    try:
        sink(item)
    except Exception as exc:
        _log.debug("a request's consumer is gone (%s: %s)", type(exc).__name__, exc)
        return False
    return True


class VLLMEngine(EngineBase):
    """Qwen2-VL on vLLM in this process.

    ``model`` is a hub id or a local folder. ``min_pixels``/``max_pixels`` are the default per-image pixel
    limits (each `Image` may set its own); ``limit_images``/``limit_videos`` cap media per prompt.
    ``engine_kwargs`` passes further vLLM engine arguments (see `VLLM_ENGINE_KEYS`). Use as a context manager,
    or call `close()`, to free the engine.

    ``dtype`` "auto" is vLLM's choice: bfloat16 on the CPU, which an x86 CPU without AVX-512 emulates (the
    engine warns then: pass "float32").
    ``gpu_memory_utilization`` (None: 0.9 on a GPU; on a CPU, a share of the memory that is free now) is the
    fraction of memory vLLM may take. ``stall_timeout`` is how long one vLLM step may run before the engine is
    declared stuck. When the engine dies (its process killed, a step stuck), every pending request fails with
    `EngineError` at once, later calls raise `EngineError` at once, and `restart()` starts a new vLLM engine.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        dtype: str = "auto",
        max_model_len: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        limit_images: int = 4,
        limit_videos: int = 1,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        seed: int = 0,
        media_policy: MediaPolicy | None = None,
        fit_to_context: bool = True,
        enable_lora: bool = False,
        max_loras: int = 4,
        max_lora_rank: int = 16,
        lora_adapters: dict[str, str] | None = None,
        stall_timeout: float = 300.0,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        require("vllm", "vllm")
        unknown = set(engine_kwargs or {}) - VLLM_ENGINE_KEYS
        if unknown:
            raise RequestError(
                f"engine_kwargs has unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(VLLM_ENGINE_KEYS))}."
            )
        self._model = check_model_source(model)
        revision = (engine_kwargs or {}).get("revision")
        self._profile = load_profile(self._model, **({"revision": revision} if revision else {}))
        self._defaults = EngineDefaults.create(
            profile=self._profile,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            limit_images=limit_images,
            limit_videos=limit_videos,
            fit_to_context=fit_to_context,
            media_policy=media_policy,
        )
        args: dict[str, Any] = {
            "model": self._model,
            "dtype": dtype,
            "max_model_len": max_model_len,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed,
            "limit_mm_per_prompt": {"image": limit_images, "video": limit_videos},
            # JSON without free whitespace: a weak model could otherwise pad with blanks until max_tokens.
            # (vLLM reads this flag from the engine config only, not per request.)
            "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
            **({"enable_lora": True, "max_loras": max_loras, "max_lora_rank": max_lora_rank} if enable_lora else {}),
            **(engine_kwargs or {}),
        }
        self._lora_enabled = bool(args.get("enable_lora"))
        self._max_lora_rank = int(args.get("max_lora_rank") or 16)
        self._lora_names = dict(lora_adapters or {})
        self._lora_requests: dict[str, Any] = {}
        self._lora_lock = threading.Lock()
        self._stall_timeout = stall_timeout
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # vLLM 0.32's CPU worker kills the engine ("CPU Generator does not use offset") when a request
            # with a seed has its prefill split into chunks; whole prefills avoid that.
            args.setdefault("enable_chunked_prefill", False)
            if cpu_kv_cache_fixed(args):
                # vLLM's start-up run of the vision encoder on a largest-possible image only measures memory,
                # and a given KV cache size leaves nothing to measure (tiny Qwen3-VL starts in 87 s instead of 170 s)
                args.setdefault("skip_mm_profiling", True)
            if args["gpu_memory_utilization"] is None:
                args["gpu_memory_utilization"] = cpu_memory_share()
            if dtype == "auto" and cpu_bfloat16_emulated():
                _log.warning(
                    "vLLM runs bfloat16 on the CPU, and this CPU has no AVX-512, so bfloat16 is emulated (a new "
                    "image took 2.5x the time of float32 on such a machine); pass dtype='float32' where the "
                    "memory allows"
                )
        elif args["gpu_memory_utilization"] is None:
            args["gpu_memory_utilization"] = 0.9
        self._args = {k: v for k, v in args.items() if v is not None}
        self._closed = False
        self._start()
        self._tokenizer_source = args.get("tokenizer") or self._model
        self._preparer = self._make_preparer(args)

    # ------------------------------------------------------------------ lifecycle

    def _start(self) -> None:
        vllm = require("vllm", "vllm")
        try:
            self._llm = vllm.LLM(**self._args)
        except Exception as exc:
            raise EngineError(
                f"vLLM could not start model {self._model!r}: {type(exc).__name__}: {str(exc)[:500]}. "
                "Check the model id or folder (offline, pass a local folder or set HF_HUB_OFFLINE=1 with the "
                "model in the cache) and that gpu_memory_utilization fits the free memory."
            ) from exc
        self._max_model_len = int(self._llm.llm_engine.model_config.max_model_len)
        self._driver = _Driver(self._llm.llm_engine, stall_timeout=self._stall_timeout)

    def _make_preparer(self, args: dict[str, Any]) -> RequestPreparer:
        return RequestPreparer.from_pretrained(
            self._tokenizer_source,
            defaults=self._defaults,
            max_model_len=self.max_model_len,
            extra="vllm",
            profile=self._profile,
            revision=args.get("revision"),
            trust_remote_code=bool(args.get("trust_remote_code")),
        )

    @property
    def healthy(self) -> bool:
        """True while the engine can run requests (not closed, not dead)."""
        return not self._closed and self._driver.dead is None

    def unfinished_requests(self) -> int:
        """How many requests vLLM holds that have not finished (0 when idle: nothing leaked)."""
        return self._driver.unfinished()

    def restart(self) -> None:
        """Start a new vLLM engine in place of this one (after it died); pending requests fail."""
        EngineBase._check_open(self)  # closed: no restart; dead: that is what restart is for
        self._shutdown_vllm(timeout=30.0)
        self._start()

    def close(self) -> None:
        """Shut the vLLM engine down and free its memory. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._shutdown_vllm(timeout=60.0)

    def _shutdown_vllm(self, timeout: float) -> None:
        """Stop the driver and vLLM; a shutdown that does not return within ``timeout`` is left behind."""
        self._driver.close()
        llm = self.__dict__.pop("_llm", None)
        if llm is None:
            return

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

    # ------------------------------------------------------------------ generation

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Run a batch of requests as one batch in vLLM; results in request order.

        A request that cannot be prepared or that vLLM rejects gets a result with ``error``; the rest complete.
        An interrupt (KeyboardInterrupt) while waiting aborts the whole batch in vLLM.
        """
        self._check_open()
        prepared = [self._try_prepare(r) for r in requests]
        collectors = self._submit(prepared, threading.Event)
        try:
            for collector in collectors:
                if isinstance(collector, _Collector):
                    self._wait(collector)
        except BaseException:
            self._abort_all(collectors)
            raise
        return [c.result() if isinstance(c, _Collector) else c for c in collectors]

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Async `generate`; preparation and submission run in a worker thread. Cancelling (or a ``wait_for``
        timeout) at any point aborts every request of the batch."""
        self._check_open()
        loop = asyncio.get_running_loop()
        handoff = _Handoff(self)

        def prepare_and_submit() -> list[_Collector | ChatResult] | None:
            prepared = [self._try_prepare(r) for r in requests]
            if handoff.cancelled:
                return None
            collectors = self._submit(prepared, lambda: _AsyncEvent(loop))
            handoff.submitted([c.request_id for c in collectors if isinstance(c, _Collector)])
            return collectors

        try:
            collectors = await loop.run_in_executor(None, prepare_and_submit)
            assert collectors is not None
            for collector in collectors:
                if isinstance(collector, _Collector):
                    await self._await(collector)
        except BaseException:
            handoff.cancel()
            raise
        return [c.result() if isinstance(c, _Collector) else c for c in collectors]

    def stream(self, request: ChatRequest) -> Iterator[ChatChunk]:
        """Yield the answer as it is generated; the last chunk carries finish_reason and usage.

        Raises the request's error (a `QwenVLError`) when it cannot run. Closing the iterator early aborts
        the request in vLLM.
        """
        self._check_open()
        prep = self._prepare_or_raise(request)
        events: queue.Queue[Any] = queue.Queue()
        request_id = self._add_stream(prep, events.put)
        yield from self._chunks(prep, request_id, self._events(events, prep.request, request_id))

    async def astream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Async `stream`. Stopping the iteration (break, cancel, ``wait_for`` timeout) at any point aborts
        the request in vLLM."""
        self._check_open()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        handoff = _Handoff(self)

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, item)

        def prepare_and_add() -> tuple[PreparedRequest, str] | None:
            prep = self._prepare_or_raise(request)
            if handoff.cancelled:
                return None
            request_id = self._add_stream(prep, put)
            handoff.submitted([request_id])
            return prep, request_id

        try:
            added = await loop.run_in_executor(None, prepare_and_add)
        except BaseException:
            handoff.cancel()
            raise
        assert added is not None
        prep, request_id = added
        state = _StreamState(self, prep, request_id)
        deadline = _deadline(prep.request)
        try:
            while True:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that races
                # with the item's arrival, and the stream would run on with nobody reading it
                try:
                    async with asyncio.timeout(_delay(deadline)):
                        event = await events.get()
                except TimeoutError:
                    raise RequestTimeoutError.of(prep.request) from None
                chunk = state.feed(event)
                if chunk is not None:
                    yield chunk
                if state.finished:
                    return
        finally:
            if not state.finished:
                self._driver.abort(request_id)

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        super()._check_open()
        self._driver.check()

    def _wait(self, collector: _Collector) -> None:
        """Wait for a batched request; the driver always ends it (answer, abort or engine failure), and its
        deadline, when it has one, ends the wait."""
        while not collector.done.wait(_poll(collector.deadline)):  # type: ignore[union-attr]
            if self._driver.dead is not None:
                collector.settle(self._driver.dead)
            elif _delay(collector.deadline) == 0:
                self._driver.abort(collector.request_id)
                collector.settle(RequestTimeoutError.of(collector.prep.request))

    async def _await(self, collector: _Collector) -> None:
        """`_wait` for the async path."""
        try:
            async with asyncio.timeout(_delay(collector.deadline)):  # not wait_for: see astream
                await collector.done.wait()  # type: ignore[union-attr]
        except TimeoutError:
            self._driver.abort(collector.request_id)
            collector.settle(RequestTimeoutError.of(collector.prep.request))

    def _events(self, events: queue.Queue[Any], request: ChatRequest, request_id: str) -> Iterator[Any]:
        deadline = _deadline(request)
        while True:
            try:
                yield events.get(timeout=_poll(deadline))
            except queue.Empty:
                if self._driver.dead is not None:
                    yield self._driver.dead
                elif _delay(deadline) == 0:
                    self._driver.abort(request_id)
                    yield RequestTimeoutError.of(request)

    def _abort_all(self, collectors: Sequence[_Collector | ChatResult]) -> None:
        for collector in collectors:
            if isinstance(collector, _Collector):
                self._driver.abort(collector.request_id)

    def _prepare(self, request: ChatRequest) -> PreparedRequest:
        prep = self._preparer.prepare(request)
        prep.lora = self._lora_request(request.lora)
        return prep

    def _lora_request(self, spec: str | None) -> Any:
        """vLLM's LoRARequest for an adapter name or folder (one id per adapter for the engine's life)."""
        if spec is None:
            return None
        if not self._lora_enabled:
            raise RequestError(
                f"the request asks for LoRA adapter {spec!r} but this VLLMEngine was created without LoRA; "
                "create it with enable_lora=True (and max_lora_rank at least the adapter's rank)."
            )
        adapter = resolve_lora(spec, self._lora_names, max_rank=self._max_lora_rank)
        with self._lora_lock:
            lora = self._lora_requests.get(adapter.name)
            if lora is None:
                from vllm.lora.request import LoRARequest

                lora = LoRARequest(adapter.name, len(self._lora_requests) + 1, adapter.path)
                self._lora_requests[adapter.name] = lora
        return lora

    def _inputs(self, prep: PreparedRequest) -> dict[str, Any]:
        inputs: dict[str, Any] = {"prompt": prep.prompt}
        if prep.mm_data:
            inputs["multi_modal_data"] = prep.mm_data
            inputs["mm_processor_kwargs"] = prep.mm_processor_kwargs
        return inputs

    def _submit(
        self, prepared: Sequence[PreparedRequest | ChatResult], make_event: Callable[[], Any]
    ) -> list[_Collector | ChatResult]:
        """Add every prepared request to vLLM in one go; failed ones become error results."""
        slots: list[_Collector | ChatResult] = []
        items = []
        for item in prepared:
            if isinstance(item, ChatResult):
                slots.append(item)
                continue
            try:
                params = self._sampling_params(item, stream=False)
            except Exception as exc:
                slots.append(error_result(item.request, _vllm_error(item.request, exc)))
                continue
            collector = _Collector(self, item, f"{item.request.request_id}-{uuid.uuid4().hex[:8]}", make_event())
            slots.append(collector)
            items.append((collector.request_id, self._inputs(item), params, item.lora, collector.put))
        errors = iter(self._driver.add(items))
        out: list[_Collector | ChatResult] = []
        for slot in slots:
            error = next(errors) if isinstance(slot, _Collector) else None
            out.append(error_result(slot.prep.request, _vllm_error(slot.prep.request, error)) if error else slot)  # type: ignore[union-attr]
        return out

    def _add_stream(self, prep: PreparedRequest, sink: Callable[[Any], None]) -> str:
        request_id = f"{prep.request.request_id}-{uuid.uuid4().hex[:8]}"
        try:
            params = self._sampling_params(prep, stream=True)
        except Exception as exc:
            raise _vllm_error(prep.request, exc) from exc
        [error] = self._driver.add([(request_id, self._inputs(prep), params, prep.lora, sink)])
        if error is not None:
            raise _vllm_error(prep.request, error) from error
        return request_id

    def _chunks(self, prep: PreparedRequest, request_id: str, events: Iterator[Any]) -> Iterator[ChatChunk]:
        state = _StreamState(self, prep, request_id)
        try:
            for event in events:
                chunk = state.feed(event)
                if chunk is not None:
                    yield chunk
                if state.finished:
                    return
        finally:
            if not state.finished:
                self._driver.abort(request_id)

    def _sampling_params(self, prep: PreparedRequest, *, stream: bool) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        options: SamplingOptions = prep.request.sampling
        structured = None
        if prep.constraint is not None:
            structured = StructuredOutputsParams(json=prep.constraint)
        return SamplingParams(
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            stop=list(options.stop) if options.stop else None,
            seed=options.seed,
            # Grounding tokens (<|box_start|>, ...) are special tokens: keep them in the text.
            skip_special_tokens=False,
            spaces_between_special_tokens=False,
            # A batch gets only final outputs (no Python round trip per token); a stream gets deltas.
            output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
            structured_outputs=structured,
        )


class _Handoff:
    """The hand-off of requests from a worker thread to the driver, for a caller that may be cancelled
    meanwhile: whichever side comes second aborts what was submitted, so nothing runs unwatched."""

    def __init__(self, engine: VLLMEngine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._ids: list[str] | None = None
        self.cancelled = False

    def submitted(self, request_ids: list[str]) -> None:
        with self._lock:
            self._ids = request_ids
            cancelled = self.cancelled
        if cancelled:
            self._abort(request_ids)

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            ids = self._ids or []
        self._abort(ids)

    def _abort(self, request_ids: list[str]) -> None:
        for request_id in request_ids:
            self._engine._driver.abort(request_id)


class _AsyncEvent:
    """An event set from another thread that an event loop can await."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def set(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)  # raises when the loop is closed: the driver copes

    async def wait(self) -> None:
        await self._event.wait()


class _Collector:
    """Receives the final output of one batched request."""

    def __init__(self, engine: VLLMEngine, prep: PreparedRequest, request_id: str, done: Any) -> None:
        self.engine = engine
        self.prep = prep
        self.request_id = request_id
        self.done = done
        self.output: Any = None
        self.deadline = _deadline(prep.request)
        self._lock = threading.Lock()

    def put(self, output: Any) -> None:
        if isinstance(output, BaseException) or output.finished:
            self.settle(output)

    def settle(self, output: Any) -> None:
        """Record the request's outcome; the first one wins (an answer racing a deadline or a failure)."""
        with self._lock:
            if self.output is not None:
                return
            self.output = output
        self.done.set()

    def result(self) -> ChatResult:
        request = self.prep.request
        out = self.output
        if isinstance(out, BaseException):
            return error_result(request, out)
        piece = out.outputs[0]
        prompt_ids = list(out.prompt_token_ids or [])
        result = ChatResult(
            text=piece.text,
            finish_reason=piece.finish_reason or "stop",
            usage=self.engine._usage_of(prompt_ids, len(piece.token_ids)),
            request_id=request.request_id,
            prompt_token_ids=prompt_ids,
            token_ids=list(piece.token_ids),
        )
        return finalize(result, self.prep)


class _StreamState:
    """Turns the delta outputs of one streamed request into `ChatChunk`s."""

    def __init__(self, engine: VLLMEngine, prep: PreparedRequest, request_id: str) -> None:
        self.engine = engine
        self.prep = prep
        self.request_id = request_id
        self.prompt_ids: list[int] | None = None
        self.completion = 0
        self.finished = False
        self.text: list[str] = []

    def feed(self, event: Any) -> ChatChunk | None:
        if isinstance(event, BaseException):
            self.finished = True
            raise event if isinstance(event, QwenVLError) else _vllm_error(self.prep.request, event)
        if self.prompt_ids is None and event.prompt_token_ids is not None:
            self.prompt_ids = list(event.prompt_token_ids)
        piece = event.outputs[0]
        self.completion += len(piece.token_ids)
        self.text.append(piece.text)
        chunk = ChatChunk(text=piece.text, token_ids=list(piece.token_ids), request_id=self.prep.request.request_id)
        if event.finished:
            self.finished = True
            chunk.usage = self.engine._usage_of(self.prompt_ids or [], self.completion)
            whole = ChatResult(text="".join(self.text), finish_reason=piece.finish_reason or "stop", usage=chunk.usage)
            finalize(whole, self.prep)
            chunk.finish_reason = whole.finish_reason
            chunk.tool_calls = whole.tool_calls
            chunk.parsed = whole.parsed
            chunk.error = whole.error
        return chunk


def _deadline(request: ChatRequest) -> float | None:
    """The monotonic time a request must end by (None: it has no timeout)."""
    return None if request.timeout is None else time.monotonic() + request.timeout


def _delay(deadline: float | None) -> float | None:
    """Seconds left to ``deadline``, never negative (None: no deadline)."""
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _poll(deadline: float | None) -> float:
    """How long a blocking wait may last before it checks the engine's health and the deadline again."""
    left = _delay(deadline)
    return 1.0 if left is None else min(1.0, left)


def _vllm_error(request: ChatRequest, exc: BaseException) -> QwenVLError:
    if isinstance(exc, QwenVLError):
        return exc
    cause = exc.__cause__ or exc
    message = f"vLLM refused or failed request {request.request_id}: {type(cause).__name__}: {cause}"
    if isinstance(cause, ValueError | TypeError):
        return RequestError(message)
    return EngineError(message)
