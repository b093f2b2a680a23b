"""VLLMServerEngine against a real vLLM OpenAI server (CPU build) on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import PIL.Image
import pytest

from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text, Video
from qwenvl.engine.server_images import SentImages
from qwenvl.errors import EngineError, MediaDecodeError
from tests.engine.test_structured_tools import WEATHER, ZOOM, Invoice
from tests.helpers import EAGER_SERVER_ARGS, make_image, png_bytes

pytestmark = pytest.mark.engine


def _requests() -> list[ChatRequest]:
    opts = SamplingOptions(max_tokens=16)
    out = [ChatRequest([Message("user", "Describe the chart in one line.")], opts)]
    for i in range(5):
        img = Image(make_image(200 + 61 * i, 150 + 17 * i, seed=i), max_pixels=(32 + 16 * i) * 784)
        out.append(ChatRequest([Message("system", "Be terse."), Message("user", [img, Text(f"item {i}")])], opts))
    two = [Image(make_image(300, 900, 7)), Image(make_image(1200, 200, 8), max_pixels=128 * 784), Text("Compare.")]
    out.append(ChatRequest([Message("user", two)], opts))
    out.append(ChatRequest([Message("user", "Weather?")], opts, tools=[WEATHER], tool_choice="auto"))
    video = Video([make_image(120, 90, i) for i in range(8)], nframes=4)
    out.append(ChatRequest([Message("user", [video, Text("What happens?")])], opts))  # sampled frames over HTTP
    return out


def _files(folder: Path) -> list[ChatRequest]:
    """Image files as users have them: a JPEG photo, one turned by its EXIF orientation, a grayscale JPEG and an
    RGBA PNG (the server engine sends the first three as they are)."""
    photo = make_image(640, 480, seed=11)
    turned = PIL.Image.Exif()
    turned[0x0112] = 6
    photo.save(folder / "photo.jpg", quality=90)
    photo.save(folder / "turned.jpg", quality=90, exif=turned)
    photo.convert("L").save(folder / "gray.jpg", quality=90)
    photo.convert("RGBA").save(folder / "logo.png")
    opts = SamplingOptions(max_tokens=16)
    names = ("photo.jpg", "turned.jpg", "gray.jpg", "logo.png")
    return [
        ChatRequest([Message("user", [Image(folder / name, max_pixels=96 * 784), Text(name)])], opts) for name in names
    ]


def test_server_greedy_equals_in_process(server_engine, vllm_engine, tmp_path) -> None:  # noqa: ANN001
    requests = _requests() + _files(tmp_path)
    assert len(requests) == 13
    local = vllm_engine.generate(requests)
    remote = server_engine.generate(requests)
    for a, b in zip(local, remote, strict=True):
        assert a.ok and b.ok, (a.error, b.error)
        assert b.prompt_token_ids == a.prompt_token_ids
        assert b.token_ids == a.token_ids and b.text == a.text
        assert b.usage == a.usage
    assert remote[8].usage.video_tokens > 0
    assert [r.usage.image_tokens for r in remote[9:]] == [88] * 4  # the files, sent as they were read


def test_server_stream_structured_and_forced_tools(server_engine) -> None:  # noqa: ANN001
    request = _requests()[2]
    [full] = server_engine.generate([request])
    chunks = list(server_engine.stream(request))
    assert len(chunks) >= 3 and "".join(c.text for c in chunks) == full.text
    assert chunks[-1].usage == full.usage and chunks[-1].finish_reason == full.finish_reason
    opts = SamplingOptions(max_tokens=300, temperature=0.8, seed=3)
    asks = [ChatRequest([Message("user", f"invoice {i}")], opts, response_format=Invoice) for i in range(10)]
    forced = [
        ChatRequest([Message("user", f"go {i}")], opts, tools=[WEATHER, ZOOM], tool_choice="required")
        for i in range(10)
    ]
    results = server_engine.generate(asks + forced)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:2]
    assert all(isinstance(r.parsed, Invoice) for r in results[:10])
    assert all(r.finish_reason == "tool_calls" and r.tool_calls for r in results[10:])


async def test_server_async_paths(server_engine) -> None:  # noqa: ANN001
    request = _requests()[1]
    [full] = await server_engine.agenerate([request])
    chunks = [c async for c in server_engine.astream(request)]
    assert "".join(c.text for c in chunks) == full.text


def test_bad_image_fails_alone_over_http(server_engine) -> None:  # noqa: ANN001
    bad = ChatRequest([Message("user", [Image(png_bytes(make_image(40, 40))[:60]), Text("x")])])
    results = server_engine.generate([_requests()[1], bad])
    assert results[0].ok and isinstance(results[1].error, MediaDecodeError)


def test_unreachable_server_errors_fast(tiny_model) -> None:  # noqa: ANN001
    from qwenvl import VLLMServerEngine
    from qwenvl.testing import _free_port

    engine = VLLMServerEngine(
        f"http://127.0.0.1:{_free_port()}/v1", str(tiny_model), max_model_len=4096, max_retries=2, retry_backoff=0.05
    )
    start = time.monotonic()
    [result] = engine.generate([_requests()[0]])
    assert isinstance(result.error, EngineError) and "cannot reach" in str(result.error)
    assert time.monotonic() - start < 10
    engine.close()


def test_server_killed_mid_batch_fails_pending_requests(tiny_model, tmp_path) -> None:  # noqa: ANN001
    from qwenvl import VLLMServerEngine
    from qwenvl.testing import VLLMServerProcess

    # a server with default flags: it refuses per-request processor limits, so images are resized client-side
    server = VLLMServerProcess(
        tiny_model, log_path=tmp_path / "server.log", trust_request_mm_kwargs=False, extra_args=EAGER_SERVER_ARGS
    )
    # another process takes the port chosen for the server before the server binds it: it starts on another
    squatter = socket.create_server(("127.0.0.1", server.port))
    with squatter, server:
        assert server.port != squatter.getsockname()[1] and str(server.port) in server.base_url
        engine = VLLMServerEngine(server.base_url, str(tiny_model), timeout=30, max_retries=2, retry_backoff=0.1)
        image_request = _requests()[3]
        [first] = engine.generate([image_request])
        assert first.ok, first.error
        assert first.usage.image_tokens == engine.count_tokens(image_request).image_tokens
        assert engine._send_mm_kwargs is False
        # 64 image requests at once from an engine that does not know yet: all 64 are refused for their
        # processor kwargs, and every one is sent again resized (not only the first)
        fresh = VLLMServerEngine(server.base_url, str(tiny_model), timeout=120, max_concurrency=64)
        burst = [
            ChatRequest(
                [Message("user", [Image(make_image(300 + i, 200, i)), Text(f"{i}")])], SamplingOptions(max_tokens=2)
            )
            for i in range(64)
        ]
        answers = fresh.generate(burst)
        assert [r.error for r in answers if not r.ok] == [] and len(answers) == 64
        assert fresh._send_mm_kwargs is False
        assert [r.usage.image_tokens for r in answers] == [fresh.count_tokens(r).image_tokens for r in burst]
        fresh.close()
        # A file the server's own limits (the model's preprocessor config here) size as planned goes as it is,
        # for the server to resize; with limits the server does not have, it counts other tokens than planned
        # and the request goes again, resized here (and so does every image after it).
        tiny = tmp_path / "tiny.png"
        make_image(40, 30, 3).save(tiny)  # under every min_pixels: sized up
        small = ChatRequest([Message("user", [Image(tiny), Text("tiny")])], SamplingOptions(max_tokens=2))
        same = VLLMServerEngine(server.base_url, str(tiny_model), send_mm_kwargs=False)
        prep, sent = same._prepare(small), SentImages()
        same._body(prep, sent, stream=False)
        assert sent.server_sized
        [answer] = same.generate([small])
        assert answer.ok and answer.usage.image_tokens == same.count_tokens(small).image_tokens
        assert same._server_pixels is not None
        same.close()
        wrong = VLLMServerEngine(
            server.base_url, str(tiny_model), send_mm_kwargs=False, min_pixels=16 * 784, server_pixels=(16 * 784, 10**7)
        )
        [answer] = wrong.generate([small])
        assert answer.ok and answer.usage.image_tokens == 20 == wrong.count_tokens(small).image_tokens  # not 6
        assert wrong._server_pixels is None
        wrong.close()
        # Long requests whatever the model writes: the schema asks for 1200 digits.
        digits = {"type": "integer", "minimum": 0, "maximum": 9}
        schema = {"type": "array", "items": digits, "minItems": 1200, "maxItems": 1200}
        long = [
            ChatRequest([Message("user", f"story {i}")], SamplingOptions(max_tokens=3000), response_format=schema)
            for i in range(16)
        ]
        box: dict[str, list] = {}
        worker = threading.Thread(target=lambda: box.setdefault("results", engine.generate(long)))
        start = time.monotonic()
        worker.start()
        while not sum(engine._http._in_flight.values()) and time.monotonic() - start < 30:
            time.sleep(0.01)
        # kill as soon as requests are in flight: on a quiet machine the server writes all 16 answers within half a
        # second of the last one arriving, so waiting for all 16 to be sent raced their answers (twice seen: 3 of
        # 16 had finished); the requests in flight then and those not sent yet must all fail
        server.kill()
        worker.join(timeout=60)
        elapsed = time.monotonic() - start
        engine.close()
    results = box["results"]
    assert len(results) == len(long)
    # the requests still generating when the server died get an engine error; none is reported as a success
    # with a partial answer (one that finished before the kill, when the machine is slow to send the last
    # requests, is whole: its 1200 digits parse)
    summary = [(type(r.error).__name__, r.finish_reason, len(r.text)) for r in results]
    failed = [r for r in results if not r.ok]
    assert all(isinstance(r.error, EngineError) and r.text == "" for r in failed), summary
    assert all(len(r.parsed) == 1200 for r in results if r.ok), summary
    assert failed, summary
    assert elapsed < 30  # errors came within the timeout: no hang


def test_replicas_spread_load_and_route_around_a_dead_one(vllm_server, tiny_model) -> None:  # noqa: ANN001
    from qwenvl import VLLMServerEngine
    from qwenvl.testing import _free_port

    dead = f"http://127.0.0.1:{_free_port()}/v1"
    engine = VLLMServerEngine(
        [dead, vllm_server.base_url], str(tiny_model), max_model_len=4096, max_retries=3, retry_backoff=0.01
    )
    results = engine.generate(
        [ChatRequest([Message("user", f"hi {i}")], SamplingOptions(max_tokens=4)) for i in range(12)]
    )
    engine.close()
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:2]
