"""`VLLMServerEngine` against misbehaving servers (scripted, on 127.0.0.1): every fault is a typed error for
its own request, within the deadline, and the engine answers the next request."""

from __future__ import annotations

import asyncio
import email.utils
import socket
import threading
import time
from pathlib import Path

import pytest

from qwenvl import ChatRequest, Message, SamplingOptions
from qwenvl.errors import RequestError, ServerError
from tests.reliability.fake_server import Exchange, FakeServer, chunk, completion, sse
from tests.reliability.faults import good_request


def _engine(server: FakeServer, tiny_model: Path, **kwargs):  # noqa: ANN202
    from qwenvl import VLLMServerEngine

    options = {"timeout": 2.0, "max_retries": 1, "retry_backoff": 0.05, "tokenizer": str(tiny_model)}
    return VLLMServerEngine(server.url, "tiny", **{**options, **kwargs})


def _ask(marker: str, max_tokens: int = 4) -> ChatRequest:
    return ChatRequest([Message("user", marker)], SamplingOptions(max_tokens=max_tokens))


def _misbehave(ex: Exchange) -> None:
    text = ex.text
    if "BADJSON" in text:
        ex.send(200, "this is not json {", {"Content-Type": "application/json"})
    elif "NOCHOICES" in text:
        ex.send(200, {"object": "chat.completion", "model": "tiny"})
    elif "TRICKLE" in text:
        body = b'{"choices": [{"message": {"content": "slow"}, "finish_reason": "stop"}]}'
        ex.http.send_response(200)
        ex.http.send_header("Content-Type", "application/json")
        ex.http.send_header("Content-Length", str(len(body)))
        ex.http.end_headers()
        ex.trickle(body, 0.3, limit_s=20)
    elif "STALL" in text:
        ex.http.send_response(200)
        ex.http.send_header("Content-Type", "application/json")
        ex.http.send_header("Content-Length", "100")
        ex.http.end_headers()
        time.sleep(8)
    elif "E500" in text:
        ex.send(500, {"error": {"message": "boom"}})
    elif "E400" in text:
        ex.send(400, {"error": {"message": "bad request: max_tokens"}})
    elif "HTML" in text:
        ex.send(200, "<html><body>proxy login</body></html>", {"Content-Type": "text/html"})
    elif ex.json and ex.json.get("stream"):
        ex.start_stream()
        ex.write(sse(chunk("a")) + sse(chunk("b", "stop")) + sse("[DONE]"))
    else:
        ex.send(200, completion("fine"))


@pytest.fixture(scope="module")
def bad_server():  # noqa: ANN201
    with FakeServer(_misbehave) as server:
        yield server


MARKERS = ["BADJSON", "NOCHOICES", "TRICKLE", "STALL", "E500", "E400", "HTML"]


def test_each_fault_fails_its_own_request_within_the_deadline(bad_server, tiny_model) -> None:  # noqa: ANN001
    engine = _engine(bad_server, tiny_model)
    try:
        batch = [_ask("hello"), *[_ask(m) for m in MARKERS], good_request(1)]
        start = time.monotonic()
        results = engine.generate(batch)
        elapsed = time.monotonic() - start
        assert results[0].ok and results[-1].ok, (results[0].error, results[-1].error)
        for marker, result in zip(MARKERS, results[1:-1], strict=True):
            assert isinstance(result.error, ServerError), (marker, result.error)
            assert bad_server.url.split("/v1")[0] in str(result.error), (marker, result.error)
        # two attempts of at most 2 s each, plus backoff: far from the 8 s stall or the 20 s trickle
        assert elapsed < 7.0, elapsed
        assert engine.generate([_ask("again")])[0].ok
    finally:
        engine.close()


def _stream_server(kind: str):  # noqa: ANN202
    def handler(ex: Exchange) -> None:
        ex.start_stream()
        if kind == "keepalive":
            end = time.monotonic() + 15
            while time.monotonic() < end and ex.write(": ping\n\n"):
                time.sleep(0.2)
        elif kind == "truncated":
            ex.write(sse(chunk("a")) + sse(chunk("b")))
        elif kind == "no-done":
            ex.write(sse(chunk("a")) + sse(chunk("b", "stop")))
        elif kind == "bad-event":
            ex.write(sse(chunk("a")) + "data: {not json\n\n")
        elif kind == "error-event":
            ex.write(sse(chunk("a")) + sse({"error": {"message": "engine overloaded"}}))
        elif kind == "trickle":
            ex.trickle((sse(chunk("abc")) * 50).encode(), 0.05, limit_s=15)
        ex.http.close_connection = True

    return handler


@pytest.mark.parametrize("kind", ["keepalive", "truncated", "no-done", "bad-event", "error-event", "trickle"])
async def test_broken_streams_raise_server_error_in_time(tiny_model, kind: str) -> None:  # noqa: ANN001
    with FakeServer(_stream_server(kind)) as server:
        engine = _engine(server, tiny_model)
        try:
            start = time.monotonic()
            with pytest.raises(ServerError):
                list(engine.stream(_ask("x")))
            with pytest.raises(ServerError):
                async for _ in engine.astream(_ask("x")):
                    pass
            assert time.monotonic() - start < 7.0
        finally:
            engine.close()


def test_a_whole_stream_is_fine(bad_server, tiny_model) -> None:  # noqa: ANN001
    engine = _engine(bad_server, tiny_model)
    try:
        chunks = list(engine.stream(_ask("stream please")))
        assert "".join(c.text for c in chunks) == "ab" and chunks[-1].finish_reason == "stop"
    finally:
        engine.close()


def _retry_after_server(value: str):  # noqa: ANN202
    state = {"n": 0}

    def handler(ex: Exchange) -> None:
        state["n"] += 1
        if state["n"] == 1:
            # An HTTP date is written when the refusal is sent: written earlier, the engine's start would use up
            # part of the wait. It has whole seconds, so "two seconds ahead" is 1 to 2 s ahead.
            header = email.utils.formatdate(time.time() + 2, usegmt=True) if value == "date+2" else value
            ex.send(429, {"error": {"message": "slow down"}}, {"Retry-After": header})
        else:
            ex.send(200, completion("after wait"))

    return handler


@pytest.mark.parametrize(
    ("value", "cap", "low", "high"),
    [
        ("1", 30.0, 0.9, 3.0),  # honoured
        ("3600", 0.3, 0.25, 2.0),  # capped
        ("date+2", 30.0, 0.5, 4.0),  # an HTTP date two seconds ahead
        ("soon", 30.0, 0.0, 1.5),  # unreadable: plain backoff
    ],
)
def test_retry_after_is_honoured_and_capped(tiny_model, value: str, cap: float, low: float, high: float) -> None:  # noqa: ANN001
    with FakeServer(_retry_after_server(value)) as server:
        engine = _engine(server, tiny_model, max_retry_after=cap)
        try:
            start = time.monotonic()
            [result] = engine.generate([_ask("x")])
            elapsed = time.monotonic() - start
            assert result.ok and result.text == "after wait"
            assert low <= elapsed <= high, elapsed
        finally:
            engine.close()


def test_every_request_refused_for_mm_kwargs_is_sent_again(tiny_model) -> None:  # noqa: ANN001
    """A server without --trust-request-mm-kwargs refuses all of a concurrent batch: all are retried."""
    seen = {"refused": 0, "served": 0}

    def handler(ex: Exchange) -> None:
        if ex.json and "mm_processor_kwargs" in ex.json:
            seen["refused"] += 1
            time.sleep(0.05)  # let the whole batch go out before the first refusal comes back
            ex.send(400, {"error": {"message": "mm_processor_kwargs is not allowed without --trust-request-mm-kwargs"}})
        else:
            seen["served"] += 1
            ex.send(200, completion("resized"))

    with FakeServer(handler) as server:
        engine = _engine(server, tiny_model)
        try:
            results = engine.generate([good_request(i) for i in range(8)])
            assert all(r.ok for r in results), [r.error for r in results if not r.ok]
            assert seen["served"] == 8 and seen["refused"] >= 2
        finally:
            engine.close()


def test_a_batch_goes_out_at_full_concurrency_over_reused_connections(tiny_model) -> None:  # noqa: ANN001
    """The engine's connections are split over several small pools (httpcore's pool costs CPU quadratic in its
    size): a batch still has max_concurrency requests in flight at once, and a second batch reuses the same
    connections."""
    n = 24
    lock = threading.Lock()
    state = {"in_flight": 0, "most": 0}
    ports: set[int] = set()
    everyone_in = threading.Event()

    def handler(ex: Exchange) -> None:
        with lock:
            state["in_flight"] += 1
            state["most"] = max(state["most"], state["in_flight"])
            ports.add(ex.http.client_address[1])
            if state["in_flight"] == n:
                everyone_in.set()
        everyone_in.wait(timeout=5)
        with lock:
            state["in_flight"] -= 1
            if state["in_flight"] == 0:
                everyone_in.clear()
        ex.send(200, completion("together"))

    with FakeServer(handler) as server:
        engine = _engine(server, tiny_model, max_concurrency=n, timeout=10.0)
        try:
            for _ in range(2):
                results = engine.generate([good_request(i) for i in range(n)])
                assert all(r.ok for r in results), [r.error for r in results if not r.ok]
                assert state["most"] == n
            assert len(ports) == n  # one connection per concurrent request, kept for the second batch
        finally:
            engine.close()


async def test_a_request_does_not_wait_for_another_batchs_preparation(tiny_model) -> None:  # noqa: ANN001
    """Batches called at once are prepared side by side: a single request is answered while a large batch is
    still being prepared."""
    with FakeServer(lambda ex: ex.send(200, completion("ok"))) as server:
        engine = _engine(server, tiny_model, timeout=10.0)
        prepare = engine._try_prepare
        large = [good_request(i) for i in range(12)]

        def slow_for_the_large_batch(request: ChatRequest):  # noqa: ANN202
            if any(request is r for r in large):
                time.sleep(0.25)
            return prepare(request)

        engine._try_prepare = slow_for_the_large_batch  # type: ignore[method-assign]
        try:
            batch = asyncio.ensure_future(engine.agenerate(large))
            await asyncio.sleep(0.1)
            start = time.monotonic()
            [single] = await asyncio.wait_for(engine.agenerate([good_request(50)]), 10)
            waited = time.monotonic() - start
            assert single.ok and not batch.done()
            assert waited < 1.5  # the large batch takes 3 s to prepare
            assert all(r.ok for r in await asyncio.wait_for(batch, 20))
        finally:
            engine.close()


def test_close_ends_the_calls_still_running(bad_server, tiny_model) -> None:  # noqa: ANN001
    """close() from another thread, while a batch and a stream wait on a stalled server: both end with
    EngineError at once instead of waiting forever."""
    from qwenvl.errors import EngineError

    engine = _engine(bad_server, tiny_model, timeout=30.0)
    outcome: dict[str, BaseException | object] = {}

    def call(name: str, fn) -> None:  # noqa: ANN001
        try:
            outcome[name] = fn()
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion
            outcome[name] = exc

    threads = [
        threading.Thread(target=call, args=("batch", lambda: engine.generate([_ask("STALL")]))),
        threading.Thread(target=call, args=("stream", lambda: list(engine.stream(_ask("STALL"))))),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    start = time.monotonic()
    engine.close()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a call still waits after close()"
    assert time.monotonic() - start < 8
    assert isinstance(outcome["batch"], EngineError) and "closed" in str(outcome["batch"])
    assert isinstance(outcome["stream"], EngineError)


async def test_close_ends_an_async_call_with_engine_error(bad_server, tiny_model) -> None:  # noqa: ANN001
    from qwenvl.errors import EngineError

    engine = _engine(bad_server, tiny_model, timeout=30.0)
    call = asyncio.ensure_future(engine.agenerate([_ask("STALL")]))
    await asyncio.sleep(0.5)
    await asyncio.to_thread(engine.close)
    with pytest.raises(EngineError, match="closed"):
        await asyncio.wait_for(call, 10)


def test_models_endpoint_that_is_not_vllm(tiny_model) -> None:  # noqa: ANN001
    def html(ex: Exchange) -> None:
        ex.send(200, "<html>login</html>", {"Content-Type": "text/html"})

    with FakeServer(html) as server:
        server.serve_models = False
        with pytest.raises(ServerError, match=r"127\.0\.0\.1"):
            _engine(server, tiny_model)

    def other_models(ex: Exchange) -> None:
        ex.send(200, {"data": [{"id": "some-other-model", "max_model_len": 10}]})

    with FakeServer(other_models) as server:
        server.serve_models = False
        with pytest.raises(RequestError, match="does not list model"):
            _engine(server, tiny_model)


def test_unreachable_server_fails_fast(tiny_model) -> None:  # noqa: ANN001
    from qwenvl import VLLMServerEngine

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    engine = VLLMServerEngine(
        f"http://127.0.0.1:{port}/v1",
        "tiny",
        tokenizer=str(tiny_model),
        max_model_len=4096,
        max_retries=1,
        retry_backoff=0.05,
        timeout=2.0,
    )
    try:
        start = time.monotonic()
        [result] = engine.generate([_ask("x")])
        assert isinstance(result.error, ServerError) and time.monotonic() - start < 5
    finally:
        engine.close()


async def test_cancelled_call_leaves_the_server_engine_working(bad_server, tiny_model) -> None:  # noqa: ANN001
    engine = _engine(bad_server, tiny_model, timeout=10.0)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(engine.agenerate([_ask("STALL")]), 0.3)
        stream = engine.astream(_ask("STALL"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(stream.__anext__(), 0.3)
        [result] = await engine.agenerate([_ask("fine")])
        assert result.ok
    finally:
        engine.close()
