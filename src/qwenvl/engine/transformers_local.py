"""`TransformersEngine`: Qwen-VL models on transformers (the family's own model class, from its config).

For machines without vLLM, and as the reference the vLLM engines are checked against. It shares request
preparation with the vLLM engines, so both see the same prompt text and the same resized pixels. Its async
methods run the blocking model in a worker thread (transformers has no async engine).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from qwenvl._lazy import require
from qwenvl.engine.base import (
    EngineBase,
    EngineDefaults,
    LoRAAdapter,
    PreparedRequest,
    RequestPreparer,
    error_result,
    finalize,
    resolve_lora,
)
from qwenvl.errors import RequestTimeoutError
from qwenvl.media import MediaPolicy
from qwenvl.messages import ChatChunk, ChatRequest, ChatResult, SamplingOptions
from qwenvl.models import load_profile

__all__ = ["TransformersEngine"]


class TransformersEngine(EngineBase):
    """Qwen2-VL, Qwen2.5-VL or Qwen3-VL on transformers, in this process (CPU or GPU).

    Arguments match `VLLMEngine` where they mean the same; ``device`` picks where the model runs (default:
    CUDA when available) and ``batch_size`` how many requests go through `generate` at once.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        dtype: str = "auto",
        device: str | None = None,
        max_model_len: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        limit_images: int = 4,
        limit_videos: int = 1,
        batch_size: int = 8,
        media_policy: MediaPolicy | None = None,
        fit_to_context: bool = True,
        lora_adapters: dict[str, str] | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        torch = require("torch", "transformers")
        transformers = require("transformers", "transformers")
        self._torch = torch
        self._model = os.fspath(model)
        self._device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
        self._profile = load_profile(self._model)
        model_class = getattr(transformers, self._profile.transformers_class, transformers.AutoModelForImageTextToText)
        self._hf_model = model_class.from_pretrained(self._model, dtype=torch_dtype, **(model_kwargs or {})).to(
            self._device
        )
        self._hf_model.eval()
        self._processor = transformers.AutoProcessor.from_pretrained(self._model)
        self._tokenizer = self._processor.tokenizer
        self._tokenizer.padding_side = "left"
        config = self._hf_model.config
        text_config = getattr(config, "text_config", config)
        self._max_model_len = max_model_len or int(text_config.max_position_embeddings)
        self._eos_ids = {int(text_config.eos_token_id)} if text_config.eos_token_id is not None else set()
        if self._hf_model.generation_config.eos_token_id is not None:
            eos = self._hf_model.generation_config.eos_token_id
            self._eos_ids |= set(eos if isinstance(eos, list) else [eos])
        self._defaults = EngineDefaults.create(
            profile=self._profile,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            limit_images=limit_images,
            limit_videos=limit_videos,
            fit_to_context=fit_to_context,
            media_policy=media_policy,
        )
        self._preparer = RequestPreparer(
            self._processor,
            self._tokenizer,
            defaults=self._defaults,
            max_model_len=self._max_model_len,
            image_token_id=int(self._processor.image_token_id),
            video_token_id=int(self._processor.video_token_id),
            profile=self._profile,
        )
        self._batch_size = batch_size
        self._lora_names = dict(lora_adapters or {})
        self._lora_loaded: dict[str, str] = {}  # adapter name -> PEFT adapter name in the model
        self._lora_active: str | None = None
        self._grammar_compiler: Any = None
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Drop the model and free its memory."""
        if self._closed:
            return
        self._closed = True
        del self._hf_model
        if self._device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    # ------------------------------------------------------------------ generation

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Run requests in batches of ``batch_size`` (grouped by sampling options); results in request order."""
        self._check_open()
        results: list[ChatResult | None] = [None] * len(requests)
        # One processor call takes one set of size limits; one generate call one set of sampling options and
        # one output constraint.
        groups: dict[tuple[Any, ...], list[tuple[int, PreparedRequest]]] = {}
        for i, request in enumerate(requests):
            prep = self._try_prepare(request)
            if isinstance(prep, ChatResult):  # this request alone cannot run
                results[i] = prep
                continue
            key = (
                request.sampling,
                repr(prep.mm_processor_kwargs),
                json.dumps(prep.constraint, sort_keys=True),
                prep.lora.name if prep.lora else None,
            )
            groups.setdefault(key, []).append((i, prep))
        for (options, *_), items in groups.items():
            for start in range(0, len(items), self._batch_size):
                batch = items[start : start + self._batch_size]
                try:
                    outputs = self._run([p for _, p in batch], options)
                except Exception as exc:  # a failing batch fails its own requests only
                    outputs = [error_result(p.request, exc) for _, p in batch]
                for (i, _), out in zip(batch, outputs, strict=True):
                    results[i] = out
        return [r for r in results if r is not None]

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """`generate` in a worker thread."""
        return await asyncio.to_thread(self.generate, requests)

    def stream(self, request: ChatRequest) -> Iterator[ChatChunk]:
        """Yield the answer as it is generated (decoded incrementally); the last chunk has usage. Closing the
        iterator early stops the generation at its next token."""
        return self._stream(request, threading.Event())

    def _stream(self, request: ChatRequest, stop: threading.Event) -> Iterator[ChatChunk]:
        try:
            yield from self._stream_tokens(request, stop)
        finally:
            stop.set()

    def _stream_tokens(self, request: ChatRequest, stop: threading.Event) -> Iterator[ChatChunk]:
        self._check_open()
        prep = self._prepare_or_raise(request)
        tokens: queue.Queue[Any] = queue.Queue()
        results: list[ChatResult] = []
        errors: list[BaseException] = []

        def on_token(token: int) -> None:
            if stop.is_set():
                raise _Stopped  # ends transformers' generate: nobody reads this stream any more
            tokens.put(token)

        def work() -> None:
            try:
                results.extend(self._run([prep], request.sampling, on_token=on_token))
            except BaseException as exc:
                errors.append(exc)
            finally:
                tokens.put(None)

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        ids: list[int] = []
        sent = ""
        while (token := tokens.get()) is not None:
            if token in self._eos_ids:
                continue
            ids.append(token)
            text = self._tokenizer.decode(ids, skip_special_tokens=False)
            if text.endswith("\ufffd"):
                continue  # an incomplete UTF-8 sequence: wait for the next token
            yield ChatChunk(text=text[len(sent) :], token_ids=[token], request_id=request.request_id)
            sent = text
        thread.join()
        if errors:
            raise errors[0]
        final = results[0]
        raw = self._tokenizer.decode([t for t in final.token_ids or [] if t not in self._eos_ids])
        yield ChatChunk(
            text=raw[len(sent) :] if raw.startswith(sent) else "",
            finish_reason=final.finish_reason,
            usage=final.usage,
            request_id=request.request_id,
            tool_calls=final.tool_calls,
            parsed=final.parsed,
            error=final.error,
        )

    async def astream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """`stream` driven from a worker thread; stopping the iteration (break, cancel) stops the generation."""
        stop = threading.Event()
        iterator = self._stream(request, stop)
        done = object()
        try:
            while (chunk := await asyncio.to_thread(next, iterator, done)) is not done:
                yield chunk  # type: ignore[misc]
        finally:
            stop.set()

    # ------------------------------------------------------------------ internals

    def _prepare(self, request: ChatRequest) -> PreparedRequest:
        prep = self._preparer.prepare(request)
        if request.lora is not None:
            prep = dataclasses.replace(prep, lora=resolve_lora(request.lora, self._lora_names))
        return prep

    def _activate(self, adapter: LoRAAdapter | None) -> None:
        """Points the model at ``adapter`` through PEFT (loaded on first use), or at the base weights."""
        if adapter is None:
            if self._lora_active is not None:
                self._hf_model.disable_adapters()
                self._lora_active = None
            return
        peft_name = self._lora_loaded.get(adapter.name)
        if peft_name is None:
            require("peft", "train")
            peft_name = f"lora_{len(self._lora_loaded) + 1}"
            self._hf_model.load_adapter(adapter.path, adapter_name=peft_name)
            self._lora_loaded[adapter.name] = peft_name
        self._hf_model.set_adapter(peft_name)
        self._hf_model.enable_adapters()
        self._lora_active = peft_name

    def _run(self, batch: list[PreparedRequest], options: SamplingOptions, on_token: Any = None) -> list[ChatResult]:
        torch = self._torch
        images = [im for p in batch for im in p.images]
        videos = [v for p in batch for v in p.videos]
        kwargs = batch[0].mm_processor_kwargs  # the same for the whole batch (see generate)
        if videos and self._profile.video_time != "none":
            kwargs["video_metadata"] = [m for p in batch for m in p.video_metadata]
        inputs = self._processor(
            text=[p.prompt for p in batch],
            images=images or None,
            videos=videos or None,
            padding=True,
            return_tensors="pt",
            **kwargs,
        ).to(self._device)
        gen: dict[str, Any] = {"max_new_tokens": options.max_tokens, "do_sample": options.temperature > 0}
        if options.temperature > 0:
            gen.update(temperature=options.temperature, top_p=options.top_p, top_k=0)
            if options.seed is not None:
                torch.manual_seed(options.seed)
        else:
            gen.update(temperature=None, top_p=None, top_k=None)
        if options.stop:
            gen.update(stop_strings=list(options.stop), tokenizer=self._tokenizer)
        if on_token is not None:
            gen["streamer"] = _TokenStreamer(on_token)
        deadlines = [p.request.timeout for p in batch if p.request.timeout is not None]
        if deadlines:
            gen["max_time"] = min(deadlines)  # transformers stops generating there; the answer is then an error
        if batch[0].constraint is not None:
            gen["logits_processor"] = [self._grammar_processor(batch[0].constraint)]
        pad_id = self._tokenizer.pad_token_id
        with self._lock, torch.inference_mode():
            self._activate(batch[0].lora)  # one adapter per batch (see generate)
            started = time.monotonic()
            output = self._hf_model.generate(**inputs, **gen, pad_token_id=pad_id)
            elapsed = time.monotonic() - started
        prompt_len = inputs["input_ids"].shape[1]
        results = []
        for row, prep in enumerate(batch):
            mask = inputs["attention_mask"][row]
            prompt_ids = [int(t) for t, m in zip(inputs["input_ids"][row], mask, strict=True) if m]
            new = [int(t) for t in output[row, prompt_len:]]
            result = self._finish(prep, prompt_ids, new, options)
            limit = prep.request.timeout
            if limit is not None and elapsed >= limit and result.finish_reason == "length":
                result = error_result(prep.request, RequestTimeoutError.of(prep.request))
            results.append(result)
        return results

    def _grammar_processor(self, schema: dict[str, Any]) -> Any:
        """A logits processor (xgrammar, as vLLM uses) that keeps the answer inside ``schema``."""
        xgr = require("xgrammar", "transformers")
        hf = require("xgrammar.contrib.hf", "transformers")
        if self._grammar_compiler is None:
            vocab_size = self._hf_model.config.get_text_config().vocab_size
            info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=vocab_size)
            self._grammar_compiler = xgr.GrammarCompiler(info)
        grammar = self._grammar_compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)
        return hf.LogitsProcessor(grammar)

    def _finish(
        self, prep: PreparedRequest, prompt_ids: list[int], new: list[int], options: SamplingOptions
    ) -> ChatResult:
        finish = "length"
        kept: list[int] = []
        for token in new:
            kept.append(token)
            if token in self._eos_ids:
                finish = "stop"
                break
        body = [t for t in kept if t not in self._eos_ids]
        text = self._tokenizer.decode(body, skip_special_tokens=False)
        for stop in options.stop or ():
            cut = text.find(stop)
            if cut >= 0:
                text, finish = text[:cut], "stop"
        usage = self._usage_of(prompt_ids, len(kept))
        result = ChatResult(
            text=text,
            finish_reason=finish,
            usage=usage,
            request_id=prep.request.request_id,
            prompt_token_ids=prompt_ids,
            token_ids=kept,
        )
        return finalize(result, prep)


class _Stopped(Exception):
    """Raised from the token callback to end a generation whose stream was closed."""


class _TokenStreamer:
    """A transformers streamer that hands each generated token id to a callback."""

    def __init__(self, on_token: Any) -> None:
        self._on_token = on_token
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # the first call carries the prompt
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self._on_token(int(token))

    def end(self) -> None:
        pass
