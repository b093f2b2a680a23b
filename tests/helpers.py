"""Small builders shared by tests."""

from __future__ import annotations

import io

from PIL import Image as PILImage

#: engine arguments of the tests' tiny-model engines
ENGINE_ARGS = {"dtype": "float32", "max_model_len": 4096}

#: for every vLLM engine and server of the tests but the session's shared in-process `vllm_engine`, which keeps
#: vLLM's default compiled model: no torch.compile, which costs 30-37 s of each start on these CPUs and changes
#: nothing the tests check (token counts, batching, errors, equal greedy answers between engines)
EAGER = {"enforce_eager": True}
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
        self.requests: list = []

    def generate(self, requests: list) -> list:
        from qwenvl import ChatResult, Usage

        self.requests.extend(requests)
        return [ChatResult(text="ok", finish_reason="stop", usage=Usage(1, 0, 0, 1)) for _ in requests]
