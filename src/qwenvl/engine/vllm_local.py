"""`VLLMEngine`: a Qwen-VL model on vLLM, in this process: the engine's configuration and its public methods.

One vLLM engine (`vllm.LLM`'s `LLMEngine`) serves every call path. A driver thread steps it and routes each
output to whoever waits for it: `generate` adds a whole batch at once, so the scheduler sees it exactly as
`LLM.generate` would; `stream`, `agenerate` and `astream` add their requests to the same engine, so sync and
async calls share the model and the KV cache, never loading it twice. Callers of the async methods never
block their event loop: adding requests (which runs the multimodal processor) happens in a worker thread.
The driver and every access to vLLM's internals are `qwenvl.engine.vllm_driver`; the requests in flight,
`qwenvl.engine.vllm_requests`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import queue
import threading
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
    resolve_lora,
)
from qwenvl.engine.vllm_driver import Driver, llm_max_model_len, shutdown_llm, start_llm
from qwenvl.engine.vllm_requests import (
    AsyncEvent,
    Collector,
    Handoff,
    StreamState,
    deadline_of,
    poll_interval,
    time_left,
    vllm_error,
)
from qwenvl.errors import (
    RequestError,
    RequestTimeoutError,
)
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
        self._llm = start_llm(self._args, self._model)
        self._max_model_len = llm_max_model_len(self._llm)
        self._driver = Driver(self._llm.llm_engine, stall_timeout=self._stall_timeout)

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
        if llm is not None:
            shutdown_llm(llm, timeout)

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
                if isinstance(collector, Collector):
                    self._wait(collector)
        except BaseException:
            self._abort_all(collectors)
            raise
        return [c.result() if isinstance(c, Collector) else c for c in collectors]

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Async `generate`; preparation and submission run in a worker thread. Cancelling (or a ``wait_for``
        timeout) at any point aborts every request of the batch."""
        self._check_open()
        loop = asyncio.get_running_loop()
        handoff = Handoff(lambda request_id: self._driver.abort(request_id))

        def prepare_and_submit() -> list[Collector | ChatResult] | None:
            prepared = [self._try_prepare(r) for r in requests]
            if handoff.cancelled:
                return None
            collectors = self._submit(prepared, lambda: AsyncEvent(loop))
            handoff.submitted([c.request_id for c in collectors if isinstance(c, Collector)])
            return collectors

        try:
            collectors = await loop.run_in_executor(None, prepare_and_submit)
            assert collectors is not None
            for collector in collectors:
                if isinstance(collector, Collector):
                    await self._await(collector)
        except BaseException:
            handoff.cancel()
            raise
        return [c.result() if isinstance(c, Collector) else c for c in collectors]

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
        handoff = Handoff(lambda request_id: self._driver.abort(request_id))

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
        state = StreamState(self, prep, request_id)
        deadline = deadline_of(prep.request)
        try:
            while True:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that races
                # with the item's arrival, and the stream would run on with nobody reading it
                try:
                    async with asyncio.timeout(time_left(deadline)):
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

    def _wait(self, collector: Collector) -> None:
        """Wait for a batched request; the driver always ends it (answer, abort or engine failure), and its
        deadline, when it has one, ends the wait."""
        while not collector.done.wait(poll_interval(collector.deadline)):  # type: ignore[union-attr]
            if self._driver.dead is not None:
                collector.settle(self._driver.dead)
            elif time_left(collector.deadline) == 0:
                self._driver.abort(collector.request_id)
                collector.settle(RequestTimeoutError.of(collector.prep.request))

    async def _await(self, collector: Collector) -> None:
        """`_wait` for the async path."""
        try:
            async with asyncio.timeout(time_left(collector.deadline)):  # not wait_for: see astream
                await collector.done.wait()  # type: ignore[union-attr]
        except TimeoutError:
            self._driver.abort(collector.request_id)
            collector.settle(RequestTimeoutError.of(collector.prep.request))

    def _events(self, events: queue.Queue[Any], request: ChatRequest, request_id: str) -> Iterator[Any]:
        deadline = deadline_of(request)
        while True:
            try:
                yield events.get(timeout=poll_interval(deadline))
            except queue.Empty:
                if self._driver.dead is not None:
                    yield self._driver.dead
                elif time_left(deadline) == 0:
                    self._driver.abort(request_id)
                    yield RequestTimeoutError.of(request)

    def _abort_all(self, collectors: Sequence[Collector | ChatResult]) -> None:
        for collector in collectors:
            if isinstance(collector, Collector):
                self._driver.abort(collector.request_id)

    def _prepare(self, request: ChatRequest) -> PreparedRequest:
        prep = self._preparer.prepare(request)
        prep = dataclasses.replace(prep, lora=self._lora_request(request.lora))
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
    ) -> list[Collector | ChatResult]:
        """Add every prepared request to vLLM in one go; failed ones become error results."""
        slots: list[Collector | ChatResult] = []
        items = []
        for item in prepared:
            if isinstance(item, ChatResult):
                slots.append(item)
                continue
            try:
                params = self._sampling_params(item, stream=False)
            except Exception as exc:
                slots.append(error_result(item.request, vllm_error(item.request, exc)))
                continue
            collector = Collector(self, item, f"{item.request.request_id}-{uuid.uuid4().hex[:8]}", make_event())
            slots.append(collector)
            items.append((collector.request_id, self._inputs(item), params, item.lora, collector.put))
        errors = iter(self._driver.add(items))
        out: list[Collector | ChatResult] = []
        for slot in slots:
            error = next(errors) if isinstance(slot, Collector) else None
            out.append(error_result(slot.prep.request, vllm_error(slot.prep.request, error)) if error else slot)  # type: ignore[union-attr]
        return out

    def _add_stream(self, prep: PreparedRequest, sink: Callable[[Any], None]) -> str:
        request_id = f"{prep.request.request_id}-{uuid.uuid4().hex[:8]}"
        try:
            params = self._sampling_params(prep, stream=True)
        except Exception as exc:
            raise vllm_error(prep.request, exc) from exc
        [error] = self._driver.add([(request_id, self._inputs(prep), params, prep.lora, sink)])
        if error is not None:
            raise vllm_error(prep.request, error) from error
        return request_id

    def _chunks(self, prep: PreparedRequest, request_id: str, events: Iterator[Any]) -> Iterator[ChatChunk]:
        state = StreamState(self, prep, request_id)
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
