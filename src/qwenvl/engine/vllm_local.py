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
    error_result,
    finalize,
    resolve_lora,
)
from qwenvl.errors import EngineClosedError, EngineError, QwenVLError, RequestError
from qwenvl.media import MediaPolicy
from qwenvl.messages import ChatChunk, ChatRequest, ChatResult, SamplingOptions, Usage

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
    A sink is called from the driver thread with each `RequestOutput`, or with an exception when the
    engine dies; it must be quick and must not raise.
    """

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._lock = threading.Condition()
        self._sinks: dict[str, Callable[[Any], None]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="qwenvl-vllm-driver", daemon=True)
        self._thread.start()

    def add(
        self, items: Sequence[tuple[str, dict[str, Any], Any, Any, Callable[[Any], None]]]
    ) -> list[Exception | None]:
        """Add requests (id, inputs, sampling params, LoRA request, sink); returns, per item, the error vLLM
        raised or None."""
        errors: list[Exception | None] = []
        with self._lock:
            if self._closed:
                raise EngineClosedError("the vLLM engine was closed; create a new VLLMEngine.")
            for request_id, inputs, params, lora, sink in items:
                try:
                    self._engine.add_request(request_id, inputs, params, lora_request=lora)
                except Exception as exc:  # a request vLLM refuses fails alone
                    errors.append(exc)
                    continue
                self._sinks[request_id] = sink
                errors.append(None)
            self._lock.notify()
        return errors

    def abort(self, request_id: str) -> None:
        """Stop a request; its sink gets nothing more."""
        with self._lock:
            if self._sinks.pop(request_id, None) is not None and not self._closed:
                self._engine.abort_request([request_id])

    def pending(self) -> int:
        """How many requests the engine has not finished."""
        with self._lock:
            return int(self._engine.get_num_unfinished_requests())

    def close(self) -> None:
        """Stop stepping; pending requests get an `EngineClosedError`."""
        with self._lock:
            self._closed = True
            sinks, self._sinks = list(self._sinks.values()), {}
            self._lock.notify()
        for sink in sinks:
            sink(EngineClosedError("the engine was closed while this request ran."))
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._engine.has_unfinished_requests():
                    self._lock.wait()
                if self._closed:
                    return
                try:
                    outputs = self._engine.step()
                except Exception as exc:  # the engine died: nothing pending may hang
                    _log.exception("vLLM engine step failed")
                    ready: list[tuple[Callable[[Any], None], Any]] = [
                        (sink, EngineError(f"the vLLM engine failed: {type(exc).__name__}: {exc}"))
                        for sink in self._sinks.values()
                    ]
                    self._sinks.clear()
                    self._closed = True
                else:
                    ready = []
                    for out in outputs:
                        sink = self._sinks.get(out.request_id)
                        if sink is not None:
                            ready.append((sink, out))
                            if out.finished:
                                del self._sinks[out.request_id]
            for sink, item in ready:
                sink(item)
            if self._closed:
                return


class VLLMEngine(EngineBase):
    """Qwen2-VL on vLLM in this process.

    ``model`` is a hub id or a local folder. ``min_pixels``/``max_pixels`` are the default per-image pixel
    limits (each `Image` may set its own); ``limit_images``/``limit_videos`` cap media per prompt.
    ``engine_kwargs`` passes further vLLM engine arguments (see `VLLM_ENGINE_KEYS`). Use as a context manager,
    or call `close()`, to free the engine.
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
        gpu_memory_utilization: float = 0.9,
        seed: int = 0,
        media_policy: MediaPolicy | None = None,
        fit_to_context: bool = True,
        enable_lora: bool = False,
        max_loras: int = 4,
        max_lora_rank: int = 16,
        lora_adapters: dict[str, str] | None = None,
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        vllm = require("vllm", "vllm")
        unknown = set(engine_kwargs or {}) - VLLM_ENGINE_KEYS
        if unknown:
            raise RequestError(
                f"engine_kwargs has unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(VLLM_ENGINE_KEYS))}."
            )
        self._model = os.fspath(model)
        self._defaults = EngineDefaults.create(
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
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # vLLM 0.32's CPU worker kills the engine ("CPU Generator does not use offset") when a request
            # with a seed has its prefill split into chunks; whole prefills avoid that.
            args.setdefault("enable_chunked_prefill", False)
        self._llm = vllm.LLM(**{k: v for k, v in args.items() if v is not None})
        self._max_model_len = int(self._llm.llm_engine.model_config.max_model_len)
        self._tokenizer_source = args.get("tokenizer") or self._model
        self._preparer = self._make_preparer(args)
        self._driver = _Driver(self._llm.llm_engine)
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    def _make_preparer(self, args: dict[str, Any]) -> RequestPreparer:
        return RequestPreparer.from_pretrained(
            self._tokenizer_source,
            defaults=self._defaults,
            max_model_len=self.max_model_len,
            extra="vllm",
            revision=args.get("revision"),
            trust_remote_code=bool(args.get("trust_remote_code")),
        )

    def close(self) -> None:
        """Shut the vLLM engine down and free its memory. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._driver.close()
        engine = self._llm.llm_engine
        renderer = getattr(engine, "renderer", None)
        if renderer is not None:
            renderer.shutdown()
        engine.engine_core.shutdown()
        del self._llm

    # ------------------------------------------------------------------ generation

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Run a batch of requests as one batch in vLLM; results in request order.

        A request that cannot be prepared or that vLLM rejects gets a result with ``error``; the rest complete.
        """
        self._check_open()
        prepared = [self._try_prepare(r) for r in requests]
        collectors = self._submit(prepared, threading.Event)
        for collector in collectors:
            if isinstance(collector, _Collector):
                collector.done.wait()  # type: ignore[union-attr]
        return [c.result() if isinstance(c, _Collector) else c for c in collectors]

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Async `generate`; preparation and submission run in a worker thread. Cancelling aborts the batch."""
        self._check_open()

        def prepare_and_submit() -> list[_Collector | ChatResult]:
            return self._submit([self._try_prepare(r) for r in requests], lambda: _AsyncEvent(loop))

        loop = asyncio.get_running_loop()
        collectors = await asyncio.to_thread(prepare_and_submit)
        try:
            for collector in collectors:
                if isinstance(collector, _Collector):
                    await collector.done.wait()  # type: ignore[union-attr]
        except asyncio.CancelledError:
            for collector in collectors:
                if isinstance(collector, _Collector):
                    self._driver.abort(collector.request_id)
            raise
        return [c.result() if isinstance(c, _Collector) else c for c in collectors]

    def stream(self, request: ChatRequest) -> Iterator[ChatChunk]:
        """Yield the answer as it is generated; the last chunk carries finish_reason and usage.

        Raises the request's error (a `QwenVLError`) when it cannot run. Closing the iterator early aborts
        the request in vLLM.
        """
        self._check_open()
        prep = self._prepare(request)
        events: queue.Queue[Any] = queue.Queue()
        request_id = self._add_stream(prep, events.put)
        yield from self._chunks(prep, request_id, iter(events.get, None))

    async def astream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Async `stream`. Stopping the iteration (break, cancel) aborts the request in vLLM."""
        self._check_open()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, item)

        prep = await asyncio.to_thread(self._prepare, request)
        request_id = await asyncio.to_thread(self._add_stream, prep, put)
        state = _StreamState(self, prep, request_id)
        try:
            while True:
                chunk = state.feed(await events.get())
                if chunk is not None:
                    yield chunk
                if state.finished:
                    return
        finally:
            if not state.finished:
                self._driver.abort(request_id)

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("this VLLMEngine was closed; create a new one.")

    def _prepare(self, request: ChatRequest) -> PreparedRequest:
        prep = self._preparer.prepare(request)
        prep.lora = self._lora_request(request.lora)
        return prep

    def _try_prepare(self, request: ChatRequest) -> PreparedRequest | ChatResult:
        try:
            return self._prepare(request)
        except QwenVLError as exc:
            _log.info("request %s cannot run: %s", request.request_id, exc)
            return error_result(request, exc)

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
            collector = _Collector(self, item, f"{item.request.request_id}-{uuid.uuid4().hex[:8]}", make_event())
            slots.append(collector)
            params = self._sampling_params(item, stream=False)
            items.append((collector.request_id, self._inputs(item), params, item.lora, collector.put))
        errors = iter(self._driver.add(items))
        out: list[_Collector | ChatResult] = []
        for slot in slots:
            error = next(errors) if isinstance(slot, _Collector) else None
            out.append(error_result(slot.prep.request, _vllm_error(slot.prep.request, error)) if error else slot)  # type: ignore[union-attr]
        return out

    def _add_stream(self, prep: PreparedRequest, sink: Callable[[Any], None]) -> str:
        request_id = f"{prep.request.request_id}-{uuid.uuid4().hex[:8]}"
        params = self._sampling_params(prep, stream=True)
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

    def _usage(self, prompt_ids: Sequence[int], completion: int) -> Usage:
        image_id, video_id = self._preparer.image_token_id, self._preparer.video_token_id
        return Usage(
            prompt_tokens=len(prompt_ids),
            image_tokens=sum(1 for t in prompt_ids if t == image_id),
            video_tokens=sum(1 for t in prompt_ids if t == video_id),
            completion_tokens=completion,
        )

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


class _AsyncEvent:
    """An event set from another thread that an event loop can await."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def set(self) -> None:
        self._loop.call_soon_threadsafe(self._event.set)

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

    def put(self, output: Any) -> None:
        if isinstance(output, BaseException) or output.finished:
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
            usage=self.engine._usage(prompt_ids, len(piece.token_ids)),
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
            chunk.usage = self.engine._usage(self.prompt_ids or [], self.completion)
            whole = ChatResult(text="".join(self.text), finish_reason=piece.finish_reason or "stop", usage=chunk.usage)
            finalize(whole, self.prep)
            chunk.finish_reason = whole.finish_reason
            chunk.tool_calls = whole.tool_calls
            chunk.parsed = whole.parsed
            chunk.error = whole.error
        return chunk


def _vllm_error(request: ChatRequest, exc: BaseException) -> QwenVLError:
    if isinstance(exc, QwenVLError):
        return exc
    cause = exc.__cause__ or exc
    message = f"vLLM refused or failed request {request.request_id}: {type(cause).__name__}: {cause}"
    if isinstance(cause, ValueError | TypeError):
        return RequestError(message)
    return EngineError(message)
