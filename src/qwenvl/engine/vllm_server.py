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
import base64
import concurrent.futures
import contextlib
import email.utils
import hashlib
import io
import json
import logging
import math
import os
import queue
import random
import secrets
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from qwenvl import media
from qwenvl._lazy import require
from qwenvl.engine.base import (
    EngineBase,
    EngineDefaults,
    PreparedRequest,
    RequestPreparer,
    error_result,
    finalize,
)
from qwenvl.errors import (
    EngineError,
    MediaDecodeError,
    QwenVLError,
    RequestError,
    RequestTimeoutError,
    ServerError,
)
from qwenvl.media import MediaPolicy
from qwenvl.messages import ChatChunk, ChatRequest, ChatResult, Usage
from qwenvl.models import load_profile
from qwenvl.prompt import to_template_messages, with_system_prompt

__all__ = ["VLLMServerEngine"]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
#: connections per HTTP client: httpcore's pool scans all of its connections at every request it starts or
#: ends (quadratic in the pool's size: 64 requests at once cost the client more CPU than the server's JSON), so
#: many concurrent requests are spread over several small pools
_POOL_SIZE = 8
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


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
    ) -> None:
        self._httpx = require("httpx", "vllm")
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise RequestError("VLLMServerEngine needs at least one base_url.")
        self._urls = [u.rstrip("/") for u in urls]
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff = retry_backoff
        self._max_retry_after = max_retry_after
        if not timeout > 0 or max_retries < 0:
            raise RequestError(
                f"VLLMServerEngine needs timeout > 0 and max_retries >= 0, got {timeout!r} and {max_retries!r}."
            )
        self._in_flight = dict.fromkeys(self._urls, 0)
        self._send_mm_kwargs = send_mm_kwargs
        self._load_lora = load_lora
        self._return_token_ids = return_token_ids
        self._lora_loaded: set[str] = set()
        self._lora_lock = threading.Lock()
        self._closed = False
        # request bodies (image encoding) are built in parallel, off the event loop
        self._encoder = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="qwenvl-encode")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qwenvl-server", daemon=True)
        self._thread.start()
        self._clients = self._call(self._make_clients(max_concurrency * len(self._urls)))
        self._client_load = [0] * len(self._clients)
        self._slots = {u: asyncio.Semaphore(max_concurrency) for u in self._urls}
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
        self._max_model_len = max_model_len or self._call(self._server_max_model_len())
        self._preparer = RequestPreparer.from_pretrained(
            tokenizer or model,
            defaults=self._defaults,
            max_model_len=self._max_model_len,
            extra="vllm",
            profile=self._profile,
        )
        self._preparer.decode_images = False  # files go on as they are; pixels are read only where resized here
        self._server_pixels = server_pixels or _processor_pixels(self._preparer.template)

    # ------------------------------------------------------------------ facts and lifecycle

    def close(self) -> None:
        """Close the HTTP connections. Calls still running end with `EngineError` (they do not hang)."""
        if self._closed:
            return
        self._closed = True
        self._call(self._end_calls())
        for client in self._clients:
            self._call(client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._encoder.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ generation

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Send a batch concurrently (up to ``max_concurrency`` per replica); results in request order."""
        self._check_open()
        prepared = [self._try_prepare(r) for r in requests]
        return self._call(self._run_batch(prepared))

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Async `generate`."""
        self._check_open()
        prepared = await asyncio.to_thread(lambda: [self._try_prepare(r) for r in requests])
        future = asyncio.run_coroutine_threadsafe(self._run_batch(prepared), self._loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            task = asyncio.current_task()
            if self._closed and not (task is not None and task.cancelling()):  # ended by close(), not our caller
                raise EngineError(_CLOSED) from None
            raise

    def stream(self, request: ChatRequest) -> Iterator[ChatChunk]:
        """Yield the answer as the server streams it; the last chunk carries finish_reason and usage."""
        self._check_open()
        prep = self._prepare_or_raise(request)
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        future = asyncio.run_coroutine_threadsafe(self._stream_to(prep, events.put), self._loop)
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

        future = asyncio.run_coroutine_threadsafe(self._stream_to(prep, put), self._loop)
        try:
            while (chunk := _unpack(await events.get())) is not None:
                yield chunk
        finally:
            future.cancel()

    # ------------------------------------------------------------------ internals

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the engine's loop and wait for it: `EngineError` if the engine is closed meanwhile;
        an interrupt (Ctrl-C) cancels it."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            while not concurrent.futures.wait([future], timeout=1.0).done:
                if not self._thread.is_alive():  # the loop is gone: nothing will finish the call
                    future.cancel()
                    raise EngineError(_CLOSED)
            return future.result()
        except concurrent.futures.CancelledError:
            raise EngineError(_CLOSED) from None
        except BaseException:
            future.cancel()
            raise

    async def _end_calls(self) -> None:
        """Cancel every call still running on the engine's loop, and wait (5 s at most) for them to end."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _make_clients(self, connections: int) -> list[Any]:
        """Enough HTTP clients of `_POOL_SIZE` connections each for ``connections`` requests at once."""
        limits = self._httpx.Limits(max_connections=_POOL_SIZE, max_keepalive_connections=_POOL_SIZE)
        return [
            self._httpx.AsyncClient(timeout=self._timeout, limits=limits, headers=self._headers)
            for _ in range(math.ceil(connections / _POOL_SIZE))
        ]

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[Any]:
        """The HTTP client with the fewest requests in flight, held for one request (on the event loop)."""
        k = min(range(len(self._clients)), key=self._client_load.__getitem__)
        self._client_load[k] += 1
        try:
            yield self._clients[k]
        finally:
            self._client_load[k] -= 1

    async def _server_max_model_len(self) -> int:
        response = await self._request("GET", "/models", None)
        data = _json_body(response)
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ServerError(
                f"{response.url} did not answer with a model list; is base_url a vLLM server's /v1 URL?",
                status=response.status_code,
                url=str(response.url),
            )
        for entry in entries:
            if isinstance(entry, dict) and entry.get("id") == self._model and entry.get("max_model_len"):
                return int(entry["max_model_len"])
        raise RequestError(f"the server does not list model {self._model!r}; check the name or pass max_model_len.")

    def _prepare(self, request: ChatRequest) -> PreparedRequest:
        prep = self._preparer.prepare(request)
        if len(prep.videos) > 1:
            raise RequestError(
                f"the request has {len(prep.videos)} videos; VLLMServerEngine sends one video per request (the "
                "server takes one set of frame metadata per request): split it, or use VLLMEngine."
            )
        prep.lora = self._served_lora(request.lora)
        return prep

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
                for url in self._urls:
                    self._call(self._load_adapter(url, name, path))
                self._lora_loaded.add(name)
        return name

    async def _load_adapter(self, url: str, name: str, path: str) -> None:
        async with self._client() as client:
            response = await client.post(url + "/load_lora_adapter", json={"lora_name": name, "lora_path": path})
        if response.status_code >= 400 and "already" not in response.text.lower():
            raise ServerError(
                f"{url} refused to load LoRA adapter {path}: {response.text[:300]} (the server needs --enable-lora "
                "and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and must see the folder)",
                status=response.status_code,
                url=url,
            )

    async def _run_batch(self, prepared: Sequence[PreparedRequest | ChatResult]) -> list[ChatResult]:
        async def one(item: PreparedRequest | ChatResult) -> ChatResult:
            if isinstance(item, ChatResult):
                return item
            try:
                async with asyncio.timeout(item.request.timeout):
                    response = await self._post_completion(item)
                    data = _json_body(response)
                    if item.server_sized and self._server_sized_otherwise(item, data):
                        response = await self._post_completion(item)  # resized here now
                        data = _json_body(response)
                return self._result(item, data, str(response.url))
            except TimeoutError:
                return error_result(item.request, RequestTimeoutError.of(item.request))
            except Exception as exc:
                return error_result(item.request, exc)

        return list(await asyncio.gather(*(one(p) for p in prepared)))

    async def _build(self, prep: PreparedRequest, *, stream: bool) -> _Body:
        """The request body, built in the encoder pool (images are encoded there, in parallel)."""
        return await asyncio.get_running_loop().run_in_executor(self._encoder, partial(self._body, prep, stream=stream))

    async def _post_completion(self, prep: PreparedRequest) -> Any:
        body = await self._build(prep, stream=False)
        try:
            return await self._request("POST", "/chat/completions", body.content)
        except ServerError as exc:
            if not self._stop_mm_kwargs(exc, sent=body.mm_kwargs):
                raise
            return await self._request("POST", "/chat/completions", (await self._build(prep, stream=False)).content)

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
        if not _refuses_mm_kwargs(error) or not sent or self._send_mm_kwargs is True:
            return False
        if self._send_mm_kwargs is None:
            _log.info("the server refuses per-request mm_processor_kwargs; resizing images in the client instead")
        self._send_mm_kwargs = False
        return True

    def _pick(self, avoid: str | None = None) -> str:
        candidates = [u for u in self._urls if u != avoid] or self._urls
        least = min(self._in_flight[u] for u in candidates)
        return random.choice([u for u in candidates if self._in_flight[u] == least])  # noqa: S311 - load spreading

    async def _request(self, method: str, path: str, content: bytes | None) -> Any:
        """One call with retries (``content``: a JSON body); returns the httpx response of a 2xx answer or raises
        `ServerError`."""
        headers = _JSON_HEADERS if content is not None else None
        url: str | None = None
        last: ServerError | None = None
        for attempt in range(self._max_retries + 1):
            url = self._pick(avoid=url if last is not None and last.status is None else None)
            async with self._slots[url]:
                self._in_flight[url] += 1
                wait = self._backoff * 2**attempt
                try:
                    async with asyncio.timeout(self._timeout), self._client() as client:
                        response = await client.request(method, url + path, content=content, headers=headers)
                except TimeoutError:
                    last = ServerError(f"{url} gave no complete answer within {self._timeout:g} s (timeout)", url=url)
                except self._httpx.TransportError as exc:
                    last = ServerError(f"cannot reach {url}: {type(exc).__name__}: {exc}", url=url)
                else:
                    if response.is_success:
                        return response
                    last = _server_error(response, url)
                    if response.status_code not in _RETRY_STATUS:
                        raise last
                    wait = max(wait, _retry_after(response, self._max_retry_after))
                finally:
                    self._in_flight[url] -= 1
            if attempt < self._max_retries:
                await asyncio.sleep(wait)
        assert last is not None
        raise last

    def _body(self, prep: PreparedRequest, *, stream: bool) -> _Body:
        options = prep.request.sampling
        with_kwargs = self._send_mm_kwargs is not False
        media: dict[str, str] = {}
        uris = self._image_uris(prep, with_kwargs=with_kwargs, stream=stream)
        body: dict[str, Any] = {
            "model": prep.lora or self._model,
            "messages": _openai_messages(prep, uris, media),
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
            "top_p": options.top_p,
            "skip_special_tokens": False,
            "spaces_between_special_tokens": False,
            "stream": stream,
        }
        if self._return_token_ids:
            body["return_token_ids"] = True
        if options.stop:
            body["stop"] = list(options.stop)
        if options.seed is not None:
            body["seed"] = options.seed
        if prep.mm_data and with_kwargs:
            body["mm_processor_kwargs"] = prep.mm_processor_kwargs
        if prep.videos:
            # the frames were sampled here: the server keeps them, at the rate they were sampled at
            meta = prep.video_metadata[0]
            body["media_io_kwargs"] = {
                "video": {
                    "fps": meta["fps"],
                    "frames_indices": meta["frames_indices"],
                    "total_num_frames": meta["total_num_frames"],
                }
            }
        if prep.constraint is not None:
            body["structured_outputs"] = {"json": prep.constraint}
        if stream:
            body["stream_options"] = {"include_usage": True}
        return _Body(_json_with_media(body, media), mm_kwargs="mm_processor_kwargs" in body)

    def _image_uris(self, prep: PreparedRequest, *, with_kwargs: bool, stream: bool) -> list[str]:
        # a stream cannot be taken back: its images are never left to the server's limits
        server = None if with_kwargs or stream else self._server_pixels
        uris, prep.server_sized = _image_uris(prep, resized=not with_kwargs, server_pixels=server)
        return uris

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
        try:
            choice = data["choices"][0]
            message = choice["message"]
            prompt_ids = data.get("prompt_token_ids")
            text = message.get("content") or ""
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ServerError(
                f"{url} answered without a chat completion ({type(exc).__name__}: {exc}); is it a vLLM server?",
                url=url,
            ) from exc
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
        try:
            async with asyncio.timeout(prep.request.timeout):
                sent = bool(prep.mm_data) and self._send_mm_kwargs is not False
                try:
                    whole = await self._stream_once(prep, emit)
                except ServerError as exc:
                    if not self._stop_mm_kwargs(exc, sent=sent):
                        raise
                    whole = await self._stream_once(prep, emit)
        except asyncio.CancelledError:
            if self._closed:  # close() ended it: the reader is told, not left waiting
                emit(("error", EngineError(_CLOSED)))
            raise
        except TimeoutError:
            emit(("error", RequestTimeoutError.of(prep.request)))
            return
        except Exception as exc:
            emit(("error", exc if isinstance(exc, QwenVLError) else ServerError(f"streaming failed: {exc}")))
            return
        emit(("chunk", whole))
        emit(("done", None))

    async def _stream_once(self, prep: PreparedRequest, emit: Any) -> ChatChunk:
        """Send one streaming request; emit every chunk but the last, which is returned with usage and the
        parsed answer."""
        body = await self._build(prep, stream=True)
        url = self._pick()
        texts: list[str] = []
        prompt_ids: list[int] | None = None
        finish: str | None = None
        usage: dict[str, Any] | None = None
        pending: ChatChunk | None = None
        done = False
        async with self._slots[url]:
            self._in_flight[url] += 1
            try:
                async with (
                    asyncio.timeout(self._timeout),
                    self._client() as client,
                    client.stream(
                        "POST", url + "/chat/completions", content=body.content, headers=_JSON_HEADERS
                    ) as response,
                ):
                    if not response.is_success:
                        await response.aread()
                        raise _server_error(response, url)
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == "[DONE]":
                            done = True
                            break
                        try:
                            data = json.loads(payload)
                        except ValueError as exc:
                            raise ServerError(f"{url} sent a stream event that is not JSON: {payload[:200]!r}") from exc
                        if not isinstance(data, dict):
                            raise ServerError(f"{url} sent a stream event that is not an object: {payload[:200]!r}")
                        if "error" in data and not data.get("choices"):
                            raise ServerError(f"{url}: {data['error']}", url=url)
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
            except TimeoutError as exc:
                raise ServerError(
                    f"streaming from {url} did not finish within the timeout ({self._timeout:g} s)", url=url
                ) from exc
            except self._httpx.TransportError as exc:
                raise ServerError(f"streaming from {url} broke off: {type(exc).__name__}: {exc}", url=url) from exc
            finally:
                self._in_flight[url] -= 1
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


def _refuses_mm_kwargs(error: ServerError) -> bool:
    return error.status == 400 and "mm_processor_kwargs" in str(error)


def _openai_messages(prep: PreparedRequest, uris: Sequence[str], media: dict[str, str]) -> list[dict[str, Any]]:
    """The request as OpenAI chat messages, with the images' data ``uris`` in their places: each media URI as a
    placeholder, the key under which it is put in ``media`` (see `_json_with_media`)."""
    images = iter(uris)
    out = []
    native = prep.profile.template_tools  # tool turns go as OpenAI tool messages to a template that reads them
    messages = to_template_messages(with_system_prompt(prep.request.messages, prep.system_prompt), native_tools=native)
    for n, msg in enumerate(messages):
        content = msg["content"]
        if isinstance(content, list):
            content = [_media_part(part, images, prep.videos, media) for part in content]
        item: dict[str, Any] = {"role": msg["role"], "content": content}
        if msg["role"] == "tool":
            item["tool_call_id"] = f"call_{n}"
        if msg.get("tool_calls"):
            item["tool_calls"] = [
                {
                    "id": f"call_{n}_{k}",
                    "type": "function",
                    "function": {
                        "name": c["function"]["name"],
                        "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False),
                    },
                }
                for k, c in enumerate(msg["tool_calls"])
            ]
        out.append(item)
    return out


def _media_part(
    part: dict[str, Any], images: Iterator[Any], videos: Sequence[Any], media: dict[str, str]
) -> dict[str, Any]:
    """An OpenAI content part: an image as its data URI; the video as its sampled frames, each a lossless PNG, in
    vLLM's frame-sequence data URI (``video/jpeg``: comma-separated base64 frames, read with PIL). The URI is
    put in ``media`` under a placeholder, and the part holds the placeholder."""
    if part["type"] == "image":
        return {"type": "image_url", "image_url": {"url": _placeholder(next(images), media)}}
    if part["type"] == "video":
        import PIL.Image

        frames = [_png_uri(PIL.Image.fromarray(frame)).split(",", 1)[1] for frame in videos[0]]
        uri = "data:video/jpeg;base64," + ",".join(frames)
        return {"type": "video_url", "video_url": {"url": _placeholder(uri, media)}}
    return part


#: placeholders for media URIs in a request body: a NUL (which no JSON text holds unescaped) and a random tag
_MEDIA_TAG = f"\x00qwenvl-media-{secrets.token_hex(8)}-"
_JSON_HEADERS = {"Content-Type": "application/json"}


class _Body(NamedTuple):
    """A request body as sent."""

    content: bytes  #: the JSON
    mm_kwargs: bool  #: whether it carries mm_processor_kwargs


def _placeholder(uri: str, media: dict[str, str]) -> str:
    key = f"{_MEDIA_TAG}{len(media)}"
    media[key] = uri
    return key


def _json_with_media(body: dict[str, Any], media: dict[str, str]) -> bytes:
    """``body`` as JSON with each placeholder of ``media`` replaced by its URI. A base64 data URI (as built
    here) needs no escaping; the JSON encoder would still scan it a character at a time (1.5 ms for a 250 KB
    photo, for every request), so it is put in as it is. A URI that might need escaping is encoded."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if not media:
        return text.encode()
    pieces = []
    for key, uri in media.items():
        quoted = json.dumps(key)
        head, sep, text = text.partition(quoted)
        assert sep, "a media placeholder is missing from the request body"
        comma = uri.find(",")  # after it, base64 (made here): no control characters; partition would copy it
        plain = uri.isascii() and comma > 0 and uri[:comma].isprintable() and '"' not in uri and "\\" not in uri
        pieces += [head, f'"{uri}"' if plain else json.dumps(uri)]
    pieces.append(text)
    return "".join(pieces).encode()


def _image_uris(
    prep: PreparedRequest, *, resized: bool, server_pixels: tuple[int, int] | None = None
) -> tuple[list[str], bool]:
    """The request's images as data URIs, each encoded once per request (a resend reuses them), and whether
    any was left to the server to resize.

    An image sent at the size it was read goes as its file's bytes, unchanged, where it came from a JPEG, PNG
    or WebP file (the server decodes the same pixels). ``resized`` (a server that takes no processor limits)
    brings each image to its planned size first, unless ``server_pixels``, the server's own limits, size it the
    same (then the file goes as it is). A JPEG photo brought down here goes as a JPEG again (quality 95: it was
    lossy to begin with, and lossless would send many times the bytes), decoded at the smallest scale that
    still covers its planned size. Everything else goes lossless (`image_data_uri`)."""
    originals = prep.originals or [None] * len(prep.images)
    profile = prep.profile
    uris = []
    left_to_server = False
    for k, (image, (lo, hi), original) in enumerate(zip(prep.images, prep.image_limits, originals, strict=True)):
        planned = profile.smart_resize(image.height, image.width, lo, hi)
        height, width = planned
        as_is = not resized or (width, height) == image.size
        if not as_is and original is not None and server_pixels is not None:
            as_is = profile.smart_resize(image.height, image.width, *server_pixels) == planned
            left_to_server = left_to_server or as_is
        key = (k, not as_is)
        hit = prep.encoded.get(key)
        if hit is not None and hit[0] is image:
            uris.append(hit[1])
            continue
        try:
            if as_is:
                uri = original.data_uri() if original is not None else image_data_uri(image)
            elif original is not None and original.mime == "image/jpeg":
                uri = _jpeg_uri(media.load_jpeg_at(original.data, (width, height)))
            else:
                uri = image_data_uri(media.resize_image(image, lo, hi, factor=profile.factor))
        except (OSError, SyntaxError, ValueError) as exc:
            raise MediaDecodeError(
                f"image {k + 1} of the request could not be decoded ({exc}); the file may be truncated or corrupt.",
                image,
            ) from exc
        prep.encoded[key] = (image, uri)
        uris.append(uri)
    return uris, left_to_server


def _processor_pixels(processor: Any) -> tuple[int, int] | None:
    """The image processor's (min_pixels, max_pixels) from the model's preprocessor config, if it says."""
    size = getattr(getattr(processor, "image_processor", None), "size", None)
    try:
        lo, hi = size["shortest_edge"], size["longest_edge"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return (int(lo), int(hi)) if lo and hi else None


#: the quality a JPEG photo brought down to its planned size is sent at
_RESIZED_JPEG_QUALITY = 95


def _jpeg_uri(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=_RESIZED_JPEG_QUALITY)
    return media.EncodedImage("image/jpeg", buffer.getvalue()).data_uri()


#: an image whose PNG would keep more than this share of its raw bytes is sent uncompressed (BMP)
_PNG_WORTH_IT = 0.5


def image_data_uri(image: Any) -> str:
    """A lossless data URI of ``image`` (the server sees the same pixels), in the encoding that costs least:
    PNG where it pays (documents, charts, screenshots: a fraction of the raw bytes), uncompressed BMP where it
    does not (photos, noise: PNG would spend CPU time to save little). A strip of rows is PNG-encoded to tell."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    raw = rgb.width * rgb.height * 3
    if raw > 64 * 1024:  # small images: PNG always (cheap either way)
        top = max(0, rgb.height // 2 - 16)
        strip = rgb.crop((0, top, rgb.width, min(rgb.height, top + 32)))
        sample = io.BytesIO()
        strip.save(sample, format="PNG", compress_level=1)
        if sample.tell() > _PNG_WORTH_IT * strip.width * strip.height * 3:
            buffer = io.BytesIO()
            rgb.save(buffer, format="BMP")
            return "data:image/bmp;base64," + base64.b64encode(buffer.getvalue()).decode()
    return _png_uri(rgb)


def _png_uri(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless: the server sees the same pixels
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


_CLOSED = "the server engine was closed while the call ran; make a new engine to go on"


def _server_error(response: Any, url: str) -> ServerError:
    try:
        detail = response.json()
        message = detail.get("error", {}).get("message") if isinstance(detail.get("error"), dict) else detail
    except ValueError:
        message = response.text[:500]
    status = response.status_code
    return ServerError(f"{url} answered HTTP {status}: {message}", status=status, url=url)


def _json_body(response: Any) -> Any:
    """The JSON body of a successful answer; `ServerError` naming the URL when it is not JSON."""
    try:
        return response.json()
    except ValueError as exc:
        raise ServerError(
            f"{response.url} answered HTTP {response.status_code} with a body that is not JSON "
            f"({response.text[:120]!r}); is base_url a vLLM server's /v1 URL?",
            status=response.status_code,
            url=str(response.url),
        ) from exc


def _retry_after(response: Any, cap: float) -> float:
    """The wait a 429/503 answer asks for (``Retry-After`` in seconds or as an HTTP date), at most ``cap``."""
    value = response.headers.get("retry-after")
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return 0.0
    return min(max(0.0, seconds), cap)
