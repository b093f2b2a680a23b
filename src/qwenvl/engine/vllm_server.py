"""`VLLMServerEngine`: the `Engine` protocol against one or more vLLM OpenAI-compatible servers.

Requests go to ``/v1/chat/completions`` with images as data URIs, the same pixel limits as the in-process
engine (``mm_processor_kwargs``), vLLM's structured outputs, and streaming over server-sent events. Several
base URLs spread the load: each request goes to the replica with the fewest requests in flight, and a retry
after a connection error goes to another one.

Tools are rendered by this client into the system prompt (Hermes format, see `qwenvl.prompt`) rather than by
the server's ``--tool-call-parser``: Qwen2-VL's chat template has no tools section for the server to fill,
and rendering here keeps the prompt, and so the answer, identical to the in-process engines. The server
therefore needs no tool flags. Token counting and context fitting use the model's processor files locally
(``tokenizer``: a hub id or folder; by default ``model``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from qwenvl.engine.base import (
    EngineBase,
    EngineDefaults,
    PreparedRequest,
    RequestPreparer,
    error_result,
    finalize,
)
from qwenvl.engine.server_http import CLOSED, ServerTransport, json_body
from qwenvl.engine.server_images import SentImages, image_uris, processor_pixels
from qwenvl.engine.server_wire import (
    DONE,
    Body,
    completion_message,
    refuses_mm_kwargs,
    request_body,
    stream_event,
)
from qwenvl.errors import EngineError, QwenVLError, RequestError, RequestTimeoutError, ServerError
from qwenvl.media import MediaPolicy
from qwenvl.messages import ChatChunk, ChatRequest, ChatResult, Usage
from qwenvl.models import load_profile

__all__ = ["VLLMServerEngine"]

_log = logging.getLogger(__name__)


class VLLMServerEngine(EngineBase):
    """Qwen2-VL behind vLLM OpenAI-compatible servers (``vllm serve``), with the in-process engine's API.

    ``base_url`` is one URL (``http://host:8000/v1``) or several replicas. ``timeout`` is the deadline of each
    HTTP attempt in seconds, whole: connecting, waiting, and reading the answer or the entire stream (a server
    that trickles bytes or sends keep-alives forever is cut off there). ``max_retries`` retries 408/429/5xx
    answers, deadlines and connection errors with exponential backoff, or after the server's ``Retry-After``
    (capped at ``max_retry_after`` seconds); ``max_concurrency`` caps requests in flight per replica.

    Pixel limits: a server started with ``--trust-request-mm-kwargs`` gets the same images and processor
    limits as the in-process engine (identical answers). Other servers refuse per-request processor limits;
    then every image is resized here to its planned size and sent without them, so token counts still hold
    (``send_mm_kwargs=None`` finds out which on the first refusal; True or False sets it). Such a server brings
    every image within its own limits (``server_pixels``: the ``min_pixels`` and ``max_pixels`` of its
    ``--mm-processor-kwargs``; None: the model's preprocessor config, which a server started without them
    uses): an image those limits size as planned here goes to it as its file is, unresized. A server that then
    counts other prompt tokens than planned has other limits: the request is sent again resized here, and so
    are all images after it.

    Images made in memory are sent by what they hold: photo-like ones as JPEG (quality 95), text, line art and
    screenshots lossless; ``lossless_images`` sends every image encoded here lossless (files sent as they are
    keep their own bytes). See `qwenvl.engine.server_images`.

    ``return_token_ids`` asks the server for the prompt's and the answer's token ids (``ChatResult.token_ids``,
    ``prompt_token_ids``); with False the answers are smaller, and image and video token counts are the ones
    planned before sending (which are the ones vLLM processes).
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        max_concurrency: int = 64,
        tokenizer: str | None = None,
        max_model_len: int | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        limit_images: int = 4,
        limit_videos: int = 1,
        media_policy: MediaPolicy | None = None,
        fit_to_context: bool = True,
        retry_backoff: float = 0.5,
        max_retry_after: float = 30.0,
        send_mm_kwargs: bool | None = None,
        server_pixels: tuple[int, int] | None = None,
        load_lora: bool = False,
        return_token_ids: bool = True,
        lossless_images: bool = False,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self._http = ServerTransport(
            urls,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            max_concurrency=max_concurrency,
            retry_backoff=retry_backoff,
            max_retry_after=max_retry_after,
        )
        self._model = model
        self._send_mm_kwargs = send_mm_kwargs
        self._load_lora = load_lora
        self._return_token_ids = return_token_ids
        self._lossless = lossless_images
        self._lora_loaded: set[str] = set()
        self._lora_lock = threading.Lock()
        self._closed = False
        # request bodies (image encoding) are built in parallel, off the event loop
        self._encoder = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="qwenvl-encode")
        # The family from the checkpoint's config, read where the tokenizer comes from (the served model's
        # folder or hub id; give tokenizer= when the server's model name is an alias).
        self._profile = load_profile(tokenizer or model)
        self._defaults = EngineDefaults.create(
            profile=self._profile,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            limit_images=limit_images,
            limit_videos=limit_videos,
            fit_to_context=fit_to_context,
            media_policy=media_policy,
        )
        self._max_model_len = max_model_len or self._http.call(self._http.max_model_len(model))
        self._preparer = RequestPreparer.from_pretrained(
            tokenizer or model,
            defaults=self._defaults,
            max_model_len=self._max_model_len,
            extra="vllm",
            profile=self._profile,
        )
        self._preparer.decode_images = False  # files go on as they are; pixels are read only where resized here
        self._server_pixels = server_pixels or processor_pixels(self._preparer.template)

    # ------------------------------------------------------------------ facts and lifecycle

    def close(self) -> None:
        """Close the HTTP connections. Calls still running end with `EngineError` (they do not hang)."""
        if self._closed:
            return
        self._closed = True
        self._http.close()
        self._encoder.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ generation

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Send a batch concurrently (up to ``max_concurrency`` per replica); results in request order."""
        self._check_open()
        prepared = [self._try_prepare(r) for r in requests]
        return self._http.call(self._run_batch(prepared))

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Async `generate`."""
        self._check_open()
        prepared = await asyncio.to_thread(lambda: [self._try_prepare(r) for r in requests])
        future = self._http.submit(self._run_batch(prepared))
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            task = asyncio.current_task()
            if self._closed and not (task is not None and task.cancelling()):  # ended by close(), not our caller
                raise EngineError(CLOSED) from None
            raise

    def stream(self, request: ChatRequest) -> Iterator[ChatChunk]:
        """Yield the answer as the server streams it; the last chunk carries finish_reason and usage."""
        self._check_open()
        prep = self._prepare_or_raise(request)
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        future = self._http.submit(self._stream_to(prep, events.put))
        try:
            while (chunk := _unpack(events.get())) is not None:
                yield chunk
        finally:
            future.cancel()

    async def astream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Async `stream`; stopping the iteration closes the connection, which makes vLLM abort the request."""
        self._check_open()
        prep = await asyncio.to_thread(self._prepare_or_raise, request)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(event: tuple[str, Any]) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        future = self._http.submit(self._stream_to(prep, put))
        try:
            while (chunk := _unpack(await events.get())) is not None:
                yield chunk
        finally:
            future.cancel()

    # ------------------------------------------------------------------ internals

    def _prepare(self, request: ChatRequest) -> PreparedRequest:
        prep = self._preparer.prepare(request)
        if len(prep.videos) > 1:
            raise RequestError(
                f"the request has {len(prep.videos)} videos; VLLMServerEngine sends one video per request (the "
                "server takes one set of frame metadata per request): split it, or use VLLMEngine."
            )
        return replace(prep, lora=self._served_lora(request.lora))

    def _served_lora(self, spec: str | None) -> str | None:
        """The model name a request with adapter ``spec`` is sent to: a name the server was started with
        (``--lora-modules NAME=PATH``), or, with ``load_lora``, a folder loaded on every replica at first use."""
        if spec is None:
            return None
        if not (Path(spec) / "adapter_config.json").is_file():
            return spec  # a name the server knows
        if not self._load_lora:
            raise RequestError(
                f"LoRA adapter {spec!r} is a local folder, but a vLLM server serves adapters by name: start it with "
                "--enable-lora --lora-modules NAME=FOLDER and pass lora='NAME', or create "
                "VLLMServerEngine(load_lora=True) for a server run with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True."
            )
        path = str(Path(spec).resolve())
        name = f"{Path(path).name}-{hashlib.sha1(path.encode()).hexdigest()[:8]}"  # noqa: S324 - a name, not security
        with self._lora_lock:
            if name not in self._lora_loaded:
                for url in self._http.urls:
                    self._http.call(self._http.load_adapter(url, name, path))
                self._lora_loaded.add(name)
        return name

    async def _run_batch(self, prepared: Sequence[PreparedRequest | ChatResult]) -> list[ChatResult]:
        async def one(item: PreparedRequest | ChatResult) -> ChatResult:
            if isinstance(item, ChatResult):
                return item
            sent = SentImages()
            try:
                async with asyncio.timeout(item.request.timeout):
                    response = await self._post_completion(item, sent)
                    data = json_body(response)
                    if sent.server_sized and self._server_sized_otherwise(item, data):
                        response = await self._post_completion(item, sent)  # resized here now
                        data = json_body(response)
                return self._result(item, data, str(response.url))
            except TimeoutError:
                return error_result(item.request, RequestTimeoutError.of(item.request))
            except Exception as exc:
                return error_result(item.request, exc)

        return list(await asyncio.gather(*(one(p) for p in prepared)))

    async def _build(self, prep: PreparedRequest, sent: SentImages, *, stream: bool) -> Body:
        """The request body, built in the encoder pool (images are encoded there, in parallel)."""
        build = partial(self._body, prep, sent, stream=stream)
        return await asyncio.get_running_loop().run_in_executor(self._encoder, build)

    async def _post_completion(self, prep: PreparedRequest, sent: SentImages) -> Any:
        body = await self._build(prep, sent, stream=False)
        try:
            return await self._http.request("POST", "/chat/completions", body.content)
        except ServerError as exc:
            if not self._stop_mm_kwargs(exc, sent=body.mm_kwargs):
                raise
            body = await self._build(prep, sent, stream=False)
            return await self._http.request("POST", "/chat/completions", body.content)

    def _server_sized_otherwise(self, prep: PreparedRequest, data: Any) -> bool:
        """True when the server, sent images to bring within its limits, counted other prompt tokens than
        planned: its limits are not ``server_pixels``. From now on every image is resized here."""
        counted = (data.get("usage") or {}).get("prompt_tokens") if isinstance(data, dict) else None
        if counted is None or counted == prep.prompt_tokens:
            return False
        if self._server_pixels is not None:
            _log.warning(
                "the server counted %s prompt tokens where %d were planned: its image limits are not %s; "
                "resizing every image here from now on (give server_pixels= the server's limits)",
                counted,
                prep.prompt_tokens,
                self._server_pixels,
            )
        self._server_pixels = None
        return True

    def _stop_mm_kwargs(self, error: ServerError, *, sent: bool) -> bool:
        """True when ``error`` is the server refusing the processor kwargs this request carried: from now on
        images are resized here instead, and the request is to be sent again without them. Every request that
        went out with the kwargs before the first refusal came back (a concurrent batch, parallel streams) is
        refused too, and each is sent again."""
        if not refuses_mm_kwargs(error) or not sent or self._send_mm_kwargs is True:
            return False
        if self._send_mm_kwargs is None:
            _log.info("the server refuses per-request mm_processor_kwargs; resizing images in the client instead")
        self._send_mm_kwargs = False
        return True

    def _body(self, prep: PreparedRequest, sent: SentImages, *, stream: bool) -> Body:
        with_kwargs = self._send_mm_kwargs is not False
        # a stream cannot be taken back: its images are never left to the server's limits
        server = None if with_kwargs or stream else self._server_pixels
        uris = image_uris(prep, resized=not with_kwargs, server_pixels=server, sent=sent, lossless=self._lossless)
        return request_body(
            prep,
            uris,
            model=self._model,
            stream=stream,
            with_kwargs=with_kwargs,
            return_token_ids=self._return_token_ids,
        )

    def _usage(self, prep: PreparedRequest, usage: dict[str, Any] | None, prompt_ids: list[int] | None) -> Usage:
        usage = usage or {}
        completion = int(usage.get("completion_tokens", 0))
        if prompt_ids:
            return self._usage_of(prompt_ids, completion)
        # no token ids from the server: the counts known before sending (equal to what vLLM processes)
        return Usage(
            prompt_tokens=int(usage.get("prompt_tokens", prep.prompt_tokens)),
            image_tokens=sum(prep.image_tokens),
            video_tokens=sum(prep.video_tokens),
            completion_tokens=completion,
        )

    def _result(self, prep: PreparedRequest, data: Any, url: str) -> ChatResult:
        choice, text, prompt_ids = completion_message(data, url)
        result = ChatResult(
            text=text,
            finish_reason=choice.get("finish_reason") or "stop",
            usage=self._usage(prep, data.get("usage"), prompt_ids),
            request_id=prep.request.request_id,
            prompt_token_ids=prompt_ids,
            token_ids=choice.get("token_ids"),
        )
        return finalize(result, prep)

    async def _stream_to(self, prep: PreparedRequest, emit: Any) -> None:
        """Stream one request, emitting ("chunk", ChatChunk) events, then ("done", None) or ("error", e)."""
        sent_images = SentImages()
        try:
            async with asyncio.timeout(prep.request.timeout):
                sent = bool(prep.mm_data) and self._send_mm_kwargs is not False
                try:
                    whole = await self._stream_once(prep, sent_images, emit)
                except ServerError as exc:
                    if not self._stop_mm_kwargs(exc, sent=sent):
                        raise
                    whole = await self._stream_once(prep, sent_images, emit)
        except asyncio.CancelledError:
            if self._closed:  # close() ended it: the reader is told, not left waiting
                emit(("error", EngineError(CLOSED)))
            raise
        except TimeoutError:
            emit(("error", RequestTimeoutError.of(prep.request)))
            return
        except Exception as exc:
            emit(("error", exc if isinstance(exc, QwenVLError) else ServerError(f"streaming failed: {exc}")))
            return
        emit(("chunk", whole))
        emit(("done", None))

    async def _stream_once(self, prep: PreparedRequest, sent: SentImages, emit: Any) -> ChatChunk:
        """Send one streaming request; emit every chunk but the last, which is returned with usage and the
        parsed answer."""
        body = await self._build(prep, sent, stream=True)
        texts: list[str] = []
        prompt_ids: list[int] | None = None
        finish: str | None = None
        usage: dict[str, Any] | None = None
        pending: ChatChunk | None = None
        done = False
        async with self._http.stream("/chat/completions", body.content) as (url, response):
            async for line in response.aiter_lines():
                data = stream_event(line, url)
                if data is None:
                    continue
                if data == DONE:
                    done = True
                    break
                assert isinstance(data, dict)
                prompt_ids = data.get("prompt_token_ids") or prompt_ids
                usage = data.get("usage") or usage
                for choice in data.get("choices", []):
                    delta = choice.get("delta", {}).get("content") or ""
                    finish = choice.get("finish_reason") or finish
                    if pending is not None:
                        emit(("chunk", pending))
                    texts.append(delta)
                    pending = ChatChunk(
                        text=delta,
                        token_ids=list(choice.get("token_ids") or []),
                        request_id=prep.request.request_id,
                    )
        if not done:
            raise ServerError(
                f"the stream from {url} ended before the answer was complete (no [DONE]); the server or a proxy "
                "cut it off.",
                url=url,
            )
        last = pending or ChatChunk(request_id=prep.request.request_id)
        whole = finalize(
            ChatResult(text="".join(texts), finish_reason=finish or "stop", usage=self._usage(prep, usage, prompt_ids)),
            prep,
        )
        last.finish_reason, last.usage = whole.finish_reason, whole.usage
        last.tool_calls, last.parsed, last.error = whole.tool_calls, whole.parsed, whole.error
        return last


def _unpack(event: tuple[str, Any]) -> ChatChunk | None:
    """The chunk of a stream event; None when the stream is done; raises the error of an error event."""
    kind, item = event
    if kind == "error":
        raise item
    return item if kind == "chunk" else None
