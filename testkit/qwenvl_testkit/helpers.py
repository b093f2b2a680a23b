"""Builders and checks shared by the tests of qwenvl and its integrations: the tiny engines' arguments, test
images, a recording stand-in engine, and the requests and health checks of the reliability tests."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

from PIL import Image as PILImage

from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text

__all__ = [
    "EAGER",
    "EAGER_SERVER_ARGS",
    "ENGINE_ARGS",
    "LONG_SCHEMA",
    "DiesOnceEngine",
    "RecordingEngine",
    "ReplayEngine",
    "assert_answers",
    "await_idle",
    "cancel_stream_after",
    "good_request",
    "long_request",
    "make_image",
    "olmocr_replay_answers",
    "png_bytes",
    "wait_idle",
]


#: engine arguments of the tests' tiny-model engines
ENGINE_ARGS: dict[str, Any] = {"dtype": "float32", "max_model_len": 4096}

#: for every vLLM engine and server of the tests but the session's shared in-process `vllm_engine`, which keeps
#: vLLM's default compiled model: no torch.compile, which costs 30-37 s of each start on these CPUs and changes
#: nothing the tests check (token counts, batching, errors, equal greedy answers between engines)
EAGER: dict[str, Any] = {"enforce_eager": True}
#: the same for a `VLLMServerProcess`
EAGER_SERVER_ARGS = ["--enforce-eager"]


def make_image(width: int, height: int, seed: int = 0) -> PILImage.Image:
    """A deterministic RGB test image with some structure (not a flat color)."""
    img = PILImage.new("RGB", (width, height), ((seed * 37) % 256, (seed * 91) % 256, (seed * 13) % 256))
    for x in range(0, width, max(1, width // 8)):
        for y in range(height):
            img.putpixel((x, y), (255 - seed % 256, 128, seed % 200))
    return img


def png_bytes(img: PILImage.Image) -> bytes:
    """Encode an image as PNG."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class RecordingEngine:
    """A stand-in engine for adapter unit tests: answers every request with "ok" and keeps the requests."""

    model_name = "recording"
    max_model_len = 4096

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def generate(self, requests: list[Any]) -> list[Any]:
        from qwenvl import ChatResult, Usage

        self.requests.extend(requests)
        return [ChatResult(text="ok", finish_reason="stop", usage=Usage(1, 0, 0, 1)) for _ in requests]


class DiesOnceEngine(RecordingEngine):
    """A `RecordingEngine` that is dead at first: it refuses every call with the transient `EngineDeadError`
    until `restart` is called (what the adapters' ``max_retries`` must do)."""

    def __init__(self) -> None:
        super().__init__()
        self.healthy = False
        self.restarts = 0

    def restart(self) -> None:
        self.restarts += 1
        self.healthy = True

    def generate(self, requests: list[Any]) -> list[Any]:
        from qwenvl.errors import EngineDeadError

        if not self.healthy:
            raise EngineDeadError("vLLM's engine-core process died.")
        return super().generate(requests)

    async def agenerate(self, requests: list[Any]) -> list[Any]:
        return self.generate(requests)


class ReplayEngine:
    """A scripted engine that answers each request with the next of ``answers`` (the last one again once they
    run out), as a model behind vLLM would: the family and defaults of ``profile`` (default Qwen2.5-VL, e.g.
    olmOCR-2), a context of ``max_model_len``; it keeps the requests."""

    model_name = "replayed"

    def __init__(
        self, *answers: str, finish_reason: str = "stop", profile: Any = None, max_model_len: int = 16384
    ) -> None:
        from qwenvl.engine.prepare import EngineDefaults
        from qwenvl.models import QWEN2_5_VL

        self.profile = profile or QWEN2_5_VL
        self.defaults = EngineDefaults.create(profile=self.profile)
        self.max_model_len = max_model_len
        self.answers = list(answers)
        self.finish_reason = finish_reason
        self.requests: list[Any] = []

    def generate(self, requests: list[Any]) -> list[Any]:
        from qwenvl import ChatResult, Usage

        out = []
        for request in requests:
            self.requests.append(request)
            text = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
            usage = Usage(prompt_tokens=1700, image_tokens=1600, completion_tokens=len(text) // 4)
            out.append(ChatResult(text=text, finish_reason=self.finish_reason, usage=usage))
        return out


def olmocr_replay_answers(page: str, folder: Any) -> list[str]:
    """The hand-written olmOCR-2 answers of ``page`` (``folder/<page>.md``), as olmOCR-2 gives them: a page whose
    answer says it is turned is answered twice, first turned (and by how much), then, asked on the turned page,
    upright."""
    import re
    from pathlib import Path

    from qwenvl.layout.olmocr import parse_answer

    text = (Path(folder) / f"{page}.md").read_text(encoding="utf-8")
    front, _ = parse_answer(text)
    if front.is_rotation_valid:
        return [text]
    upright = re.sub(r"is_rotation_valid: \w+", "is_rotation_valid: True", text, count=1)
    upright = re.sub(r"rotation_correction: \d+", "rotation_correction: 0", upright, count=1)
    return [text, upright]


#: an answer of at least 3000 tokens whatever the random model writes: 1500 digits in a JSON array
LONG_SCHEMA = {
    "type": "array",
    "items": {"type": "integer", "minimum": 0, "maximum": 9},
    "minItems": 1500,
    "maxItems": 1500,
}


def long_request(i: int = 0) -> ChatRequest:
    """A request that runs for seconds on the tiny model (thousands of tokens under a schema)."""
    return ChatRequest([Message("user", f"count {i}")], SamplingOptions(max_tokens=3500), response_format=LONG_SCHEMA)


def good_request(i: int = 0, max_tokens: int = 4) -> ChatRequest:
    """A short, valid image request."""
    img = Image(make_image(96 + 8 * i, 64 + 4 * i, seed=i), max_pixels=64 * 28 * 28)
    return ChatRequest([Message("user", [img, Text(f"what is {i}?")])], SamplingOptions(max_tokens=max_tokens))


def wait_idle(engine: Any, timeout: float = 5.0) -> int:
    """Poll until the engine holds no unfinished request (or ``timeout``); returns the last count."""
    end = time.monotonic() + timeout
    count = engine.unfinished_requests()
    while count and time.monotonic() < end:
        time.sleep(0.05)
        count = engine.unfinished_requests()
    return int(count)


async def await_idle(engine: Any, timeout: float = 5.0) -> int:
    """`wait_idle` without blocking the event loop."""
    end = time.monotonic() + timeout
    count = engine.unfinished_requests()
    while count and time.monotonic() < end:
        await asyncio.sleep(0.05)
        count = engine.unfinished_requests()
    return int(count)


def assert_answers(engine: Any) -> None:
    """The engine answers a normal request, and nothing is left running afterwards."""
    [result] = engine.generate([good_request(7)])
    assert result.ok, result.error
    assert result.usage.completion_tokens >= 1 and result.usage.image_tokens > 0
    assert wait_idle(engine) == 0


async def cancel_stream_after(stream: Any, delay: float) -> bool:
    """Consume an async iterator in a task and cancel the task after ``delay`` seconds; True when it was
    cancelled (False when the stream ended first)."""

    async def consume() -> None:
        async for _ in stream:
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(delay)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return True
    return False
