"""The HTTP side of `VLLMServerEngine`: one concern, getting a request to a vLLM server and its answer back.

`ServerTransport` owns an event loop on a thread of its own (so the synchronous API never blocks a caller's
loop), a pool of HTTP clients, the choice of replica (fewest requests in flight; a retry after a connection
error goes to another one), a cap on requests in flight per replica, a deadline per attempt, and retries of
transient answers (`qwenvl.engine.retry.TRANSIENT_STATUS`, deadlines, connection errors) with exponential
backoff or after the server's ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import email.utils
import math
import random
import threading
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any, TypeVar

from qwenvl._lazy import require
from qwenvl.engine.retry import TRANSIENT_STATUS
from qwenvl.errors import EngineError, RequestError, ServerError

__all__ = ["CLOSED", "JSON_HEADERS", "ServerTransport", "json_body", "server_error"]

_T = TypeVar("_T")

#: connections per HTTP client: httpcore's pool scans all of its connections at every request it starts or
#: ends (quadratic in the pool's size: 64 requests at once cost the client more CPU than the server's JSON), so
#: many concurrent requests are spread over several small pools
_POOL_SIZE = 8
#: why a call ended when the engine was closed under it
CLOSED = "the server engine was closed while the call ran; make a new engine to go on"
JSON_HEADERS = {"Content-Type": "application/json"}


class ServerTransport:
    """HTTP calls to one or more replicas of a vLLM server, from an event loop of its own.

    ``timeout`` is each attempt's deadline in seconds, whole (connecting, waiting, reading the answer or the
    entire stream); ``max_retries`` retries transient failures; ``max_concurrency`` caps requests in flight per
    replica.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        api_key: str | None,
        timeout: float,
        max_retries: int,
        max_concurrency: int,
        retry_backoff: float,
        max_retry_after: float,
    ) -> None:
        self.httpx = require("httpx", "vllm")
        if not urls:
            raise RequestError("VLLMServerEngine needs at least one base_url.")
        if not timeout > 0 or max_retries < 0:
            raise RequestError(
                f"VLLMServerEngine needs timeout > 0 and max_retries >= 0, got {timeout!r} and {max_retries!r}."
            )
        self.urls = [u.rstrip("/") for u in urls]
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._max_retries = max_retries
        self._backoff = retry_backoff
        self._max_retry_after = max_retry_after
        self._in_flight = dict.fromkeys(self.urls, 0)
        self.closed = False
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="qwenvl-server", daemon=True)
        self._thread.start()
        self._clients = self.call(self._make_clients(max_concurrency * len(self.urls)))
        self._client_load = [0] * len(self._clients)
        self._slots = {u: asyncio.Semaphore(max_concurrency) for u in self.urls}

    # ------------------------------------------------------------------ the loop

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on the transport's loop and wait for it: `EngineError` if the transport is closed
        meanwhile; an interrupt (Ctrl-C) cancels it."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            while not concurrent.futures.wait([future], timeout=1.0).done:
                if not self._thread.is_alive():  # the loop is gone: nothing will finish the call
                    future.cancel()
                    raise EngineError(CLOSED)
            return future.result()
        except concurrent.futures.CancelledError:
            raise EngineError(CLOSED) from None
        except BaseException:
            future.cancel()
            raise

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        """Start ``coro`` on the transport's loop without waiting."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self) -> None:
        """End the calls still running (they raise `EngineError`), close the connections and stop the loop."""
        if self.closed:
            return
        self.closed = True
        self.call(self._end_calls())
        for client in self._clients:
            self.call(client.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)

    async def _end_calls(self) -> None:
        """Cancel every call still running on the loop, and wait (5 s at most) for them to end."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    # ------------------------------------------------------------------ clients and replicas

    async def _make_clients(self, connections: int) -> list[Any]:
        """Enough HTTP clients of `_POOL_SIZE` connections each for ``connections`` requests at once."""
        limits = self.httpx.Limits(max_connections=_POOL_SIZE, max_keepalive_connections=_POOL_SIZE)
        return [
            self.httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self._headers)
            for _ in range(math.ceil(connections / _POOL_SIZE))
        ]

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[Any]:
        """The HTTP client with the fewest requests in flight, held for one request (on the loop)."""
        k = min(range(len(self._clients)), key=self._client_load.__getitem__)
        self._client_load[k] += 1
        try:
            yield self._clients[k]
        finally:
            self._client_load[k] -= 1

    def pick(self, avoid: str | None = None) -> str:
        """The replica with the fewest requests in flight (another than ``avoid`` where there is one)."""
        candidates = [u for u in self.urls if u != avoid] or self.urls
        least = min(self._in_flight[u] for u in candidates)
        return random.choice([u for u in candidates if self._in_flight[u] == least])  # noqa: S311 - load spreading

    # ------------------------------------------------------------------ calls

    async def request(self, method: str, path: str, content: bytes | None) -> Any:
        """One call with retries (``content``: a JSON body); returns the httpx response of a 2xx answer or raises
        `ServerError`."""
        headers = JSON_HEADERS if content is not None else None
        url: str | None = None
        last: ServerError | None = None
        for attempt in range(self._max_retries + 1):
            url = self.pick(avoid=url if last is not None and last.status is None else None)
            async with self._slots[url]:
                self._in_flight[url] += 1
                wait = self._backoff * 2**attempt
                try:
                    async with asyncio.timeout(self.timeout), self.client() as client:
                        response = await client.request(method, url + path, content=content, headers=headers)
                except TimeoutError:
                    last = ServerError(f"{url} gave no complete answer within {self.timeout:g} s (timeout)", url=url)
                except self.httpx.TransportError as exc:
                    last = ServerError(f"cannot reach {url}: {type(exc).__name__}: {exc}", url=url)
                else:
                    if response.is_success:
                        return response
                    last = server_error(response, url)
                    if response.status_code not in TRANSIENT_STATUS:
                        raise last
                    wait = max(wait, _retry_after(response, self._max_retry_after))
                finally:
                    self._in_flight[url] -= 1
            if attempt < self._max_retries:
                await asyncio.sleep(wait)
        assert last is not None
        raise last

    @contextlib.asynccontextmanager
    async def stream(self, path: str, content: bytes) -> AsyncIterator[tuple[str, Any]]:
        """A streaming POST to one replica (not retried: a stream cannot be taken back), as (url, response) of a
        2xx answer; its deadline covers the whole stream. Raises `ServerError` for an error answer, a deadline
        passed or a connection broken off."""
        url = self.pick()
        async with self._slots[url]:
            self._in_flight[url] += 1
            try:
                async with (
                    asyncio.timeout(self.timeout),
                    self.client() as client,
                    client.stream("POST", url + path, content=content, headers=JSON_HEADERS) as response,
                ):
                    if not response.is_success:
                        await response.aread()
                        raise server_error(response, url)
                    yield url, response
            except TimeoutError as exc:
                raise ServerError(
                    f"streaming from {url} did not finish within the timeout ({self.timeout:g} s)", url=url
                ) from exc
            except self.httpx.TransportError as exc:
                raise ServerError(f"streaming from {url} broke off: {type(exc).__name__}: {exc}", url=url) from exc
            finally:
                self._in_flight[url] -= 1

    async def max_model_len(self, model: str) -> int:
        """The context length the server lists for ``model`` (``GET /models``)."""
        response = await self.request("GET", "/models", None)
        data = json_body(response)
        entries = data.get("data") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ServerError(
                f"{response.url} did not answer with a model list; is base_url a vLLM server's /v1 URL?",
                status=response.status_code,
                url=str(response.url),
            )
        for entry in entries:
            if isinstance(entry, dict) and entry.get("id") == model and entry.get("max_model_len"):
                return int(entry["max_model_len"])
        raise RequestError(f"the server does not list model {model!r}; check the name or pass max_model_len.")

    async def load_adapter(self, url: str, name: str, path: str) -> None:
        """Load the LoRA adapter in folder ``path`` on replica ``url`` under ``name`` (loaded already: fine)."""
        async with self.client() as client:
            response = await client.post(url + "/load_lora_adapter", json={"lora_name": name, "lora_path": path})
        if response.status_code >= 400 and "already" not in response.text.lower():
            raise ServerError(
                f"{url} refused to load LoRA adapter {path}: {response.text[:300]} (the server needs --enable-lora "
                "and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, and must see the folder)",
                status=response.status_code,
                url=url,
            )


def server_error(response: Any, url: str) -> ServerError:
    """The `ServerError` of an error answer, with the server's message."""
    try:
        detail = response.json()
        message = detail.get("error", {}).get("message") if isinstance(detail.get("error"), dict) else detail
    except ValueError:
        message = response.text[:500]
    status = response.status_code
    return ServerError(f"{url} answered HTTP {status}: {message}", status=status, url=url)


def json_body(response: Any) -> Any:
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
