"""`VLLMEngine`: Qwen2-VL on vLLM, in this process.

One vLLM engine (`AsyncLLM`) serves every call path: `generate` submits a whole batch at once, so vLLM's
scheduler batches it exactly as `LLM.generate` would; `agenerate`, `astream` and `stream` use the same
engine, so mixing sync and async calls never loads the model twice. The engine runs on its own event loop
in a background thread, which makes it safe to call from any thread or event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from qwenvl._lazy import require
from qwenvl.engine.base import EngineDefaults, PreparedRequest, RequestPreparer, error_result
from qwenvl.errors import EngineClosedError, EngineError, QwenVLError, RequestError
from qwenvl.media import MediaPolicy
from qwenvl.messages import ChatChunk, ChatRequest, ChatResult, SamplingOptions, Usage

__all__ = ["VLLM_ENGINE_KEYS", "VLLMEngine"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

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


class VLLMEngine:
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
        engine_kwargs: dict[str, Any] | None = None,
    ) -> None:
        require("vllm", "vllm")
        unknown = set(engine_kwargs or {}) - VLLM_ENGINE_KEYS
        if unknown:
            raise RequestError(
                f"engine_kwargs has unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(VLLM_ENGINE_KEYS))}."
            )
        self._model = os.fspath(model)
        base = EngineDefaults()
        self._defaults = EngineDefaults(
            min_pixels=min_pixels or base.min_pixels,
            max_pixels=max_pixels or base.max_pixels,
            limit_images=limit_images,
            limit_videos=limit_videos,
            fit_to_context=fit_to_context,
            policy=media_policy or base.policy,
        )
        self._engine_args: dict[str, Any] = {
            "model": self._model,
            "dtype": dtype,
            "max_model_len": max_model_len,
            "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization,
            "seed": seed,
            "limit_mm_per_prompt": {"image": limit_images, "video": limit_videos},
            **(engine_kwargs or {}),
        }
        self._closed = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qwenvl-vllm", daemon=True)
        self._thread.start()
        try:
            self._llm = self._call(self._start())
            self._preparer = self._make_preparer()
        except BaseException:
            self._stop_loop()
            raise

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> Any:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(**{k: v for k, v in self._engine_args.items() if v is not None})
        return AsyncLLM.from_engine_args(args)

    def _make_preparer(self) -> RequestPreparer:
        transformers = require("transformers", "vllm")
        processor = transformers.AutoProcessor.from_pretrained(
            self._engine_args.get("tokenizer") or self._model,
            revision=self._engine_args.get("revision"),
            trust_remote_code=bool(self._engine_args.get("trust_remote_code")),
        )
        return RequestPreparer(
            processor,
            processor.tokenizer,
            defaults=self._defaults,
            max_model_len=self.max_model_len,
            image_token_id=int(processor.image_token_id),
            video_token_id=int(processor.video_token_id),
        )

    def close(self) -> None:
        """Shut the vLLM engine down and free its memory. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            self._llm.shutdown()
        finally:
            self._llm = None  # AsyncLLM.__del__ shuts down again; let it run now, not at interpreter exit
            self._stop_loop()

    def _stop_loop(self) -> None:
        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(drain(), self._loop).result(timeout=10)
        except Exception as exc:  # noqa: BLE001 - best effort at shutdown
            _log.debug("draining the engine loop failed: %s", exc)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> VLLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ facts

    @property
    def model_name(self) -> str:
        """The model's name (hub id or folder)."""
        return self._model

    @property
    def max_model_len(self) -> int:
        """The context length vLLM runs with."""
        return int(self._llm.model_config.max_model_len)

    @property
    def defaults(self) -> EngineDefaults:
        """The per-request defaults (pixel limits, media policy, ...)."""
        return self._defaults

    def count_tokens(self, request: ChatRequest) -> Usage:
        """The prompt's token counts (images at their final size), computed before anything runs."""
        prep = self._preparer.prepare(request)
        return Usage(
            prompt_tokens=prep.prompt_tokens,
            image_tokens=sum(prep.image_tokens),
            video_tokens=sum(prep.video_tokens),
        )

    # ------------------------------------------------------------------ generation

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Run a batch of requests in one submission to vLLM; results in request order.

        A request that cannot be prepared or that vLLM rejects gets a result with ``error``; the rest complete.
        """
        self._check_open()
        prepared = [self._try_prepare(r) for r in requests]
        return self._call(self._run_batch(prepared))

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Async `generate`: media preparation runs in a worker thread, generation on the engine's loop."""
        self._check_open()
        prepared = await asyncio.to_thread(lambda: [self._try_prepare(r) for r in requests])
        future = asyncio.run_coroutine_threadsafe(self._run_batch(prepared), self._loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    def stream(self, request: ChatRequest) -> Iterator[ChatChunk]:
        """Yield the answer as it is generated; the last chunk carries finish_reason and usage.

        Raises the request's error (a `QwenVLError`) when it cannot run. Closing the iterator early cancels
        the request in vLLM.
        """
        self._check_open()
        prep = self._preparer.prepare(request)
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        future = asyncio.run_coroutine_threadsafe(self._produce(prep, events.put), self._loop)
        try:
            while True:
                kind, item = events.get()
                if kind == "chunk":
                    yield item
                elif kind == "error":
                    raise item
                else:
                    return
        finally:
            if not future.done():
                future.cancel()

    async def astream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Async `stream`. Stopping the iteration (break, cancel) aborts the request in vLLM."""
        self._check_open()
        prep = await asyncio.to_thread(self._preparer.prepare, request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(event: tuple[str, Any]) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        future = asyncio.run_coroutine_threadsafe(self._produce(prep, put), self._loop)
        try:
            while True:
                kind, item = await events.get()
                if kind == "chunk":
                    yield item
                elif kind == "error":
                    raise item
                else:
                    return
        finally:
            if not future.done():
                future.cancel()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosedError("this VLLMEngine was closed; create a new one.")

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _try_prepare(self, request: ChatRequest) -> PreparedRequest | ChatResult:
        try:
            return self._preparer.prepare(request)
        except QwenVLError as exc:
            _log.info("request %s cannot run: %s", request.request_id, exc)
            return error_result(request, exc)

    async def _run_batch(self, prepared: Sequence[PreparedRequest | ChatResult]) -> list[ChatResult]:
        async def one(item: PreparedRequest | ChatResult) -> ChatResult:
            if isinstance(item, ChatResult):
                return item
            chunks: list[ChatChunk] = []
            try:
                prompt_ids = await self._produce(
                    item, lambda ev: chunks.append(ev[1]) if ev[0] == "chunk" else None, raise_=True
                )
            except Exception as exc:
                return error_result(item.request, exc)
            result = _join(item, chunks)
            result.prompt_token_ids = prompt_ids
            return result

        return list(await asyncio.gather(*(one(p) for p in prepared)))

    async def _produce(
        self, prep: PreparedRequest, emit: Callable[[tuple[str, Any]], Any], *, raise_: bool = False
    ) -> list[int] | None:
        """Run one request on vLLM, emitting ("chunk", ChatChunk) events, then ("done", None) or ("error", e).

        Returns the prompt token ids vLLM processed."""
        request = prep.request
        inputs: dict[str, Any] = {"prompt": prep.prompt}
        if prep.mm_data:
            inputs["multi_modal_data"] = prep.mm_data
            inputs["mm_processor_kwargs"] = prep.mm_processor_kwargs
        request_id = f"{request.request_id}-{uuid.uuid4().hex[:8]}"
        prompt_ids: list[int] | None = None
        completion = 0
        try:
            params = self._sampling_params(request.sampling)
            async for out in self._llm.generate(inputs, params, request_id=request_id):
                if prompt_ids is None and out.prompt_token_ids is not None:
                    prompt_ids = list(out.prompt_token_ids)
                piece = out.outputs[0]
                completion += len(piece.token_ids)
                chunk = ChatChunk(text=piece.text, token_ids=list(piece.token_ids), request_id=request.request_id)
                if out.finished:
                    chunk.finish_reason = piece.finish_reason or "stop"
                    chunk.usage = self._usage(prompt_ids or [], completion)
                emit(("chunk", chunk))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = exc if isinstance(exc, QwenVLError) else _vllm_error(request, exc)
            if raise_:
                raise error from exc
            emit(("error", error))
            return prompt_ids
        emit(("done", None))
        return prompt_ids

    def _usage(self, prompt_ids: list[int], completion: int) -> Usage:
        image_id, video_id = self._preparer.image_token_id, self._preparer.video_token_id
        return Usage(
            prompt_tokens=len(prompt_ids),
            image_tokens=sum(1 for t in prompt_ids if t == image_id),
            video_tokens=sum(1 for t in prompt_ids if t == video_id),
            completion_tokens=completion,
        )

    def _sampling_params(self, options: SamplingOptions) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            max_tokens=options.max_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            stop=list(options.stop) if options.stop else None,
            seed=options.seed,
            # Grounding tokens (<|box_start|>, ...) are special tokens: keep them in the text.
            skip_special_tokens=False,
            spaces_between_special_tokens=False,
            output_kind=RequestOutputKind.DELTA,
        )


def _join(prep: PreparedRequest, chunks: list[ChatChunk]) -> ChatResult:
    """Fold streamed chunks into one result."""
    last = chunks[-1] if chunks else ChatChunk()
    return ChatResult(
        text="".join(c.text for c in chunks),
        finish_reason=last.finish_reason,
        usage=last.usage or Usage(),
        request_id=prep.request.request_id,
        token_ids=[t for c in chunks for t in c.token_ids],
    )


def _vllm_error(request: ChatRequest, exc: BaseException) -> QwenVLError:
    cause = exc.__cause__ or exc
    message = f"vLLM failed on request {request.request_id}: {type(cause).__name__}: {cause}"
    if isinstance(cause, ValueError):
        return RequestError(message)
    return EngineError(message)
