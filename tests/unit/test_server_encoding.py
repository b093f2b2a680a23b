"""What a server engine sends: images brought down to their planned size before they travel, each encoded once,
losslessly, in the encoding that costs least."""

from __future__ import annotations

import base64
import io
import random
from pathlib import Path

import PIL.Image

from qwenvl import ChatRequest, Image, Message, Text
from qwenvl.engine.prepare import EngineDefaults, RequestPreparer
from qwenvl.engine.vllm_server import _cached_uri, image_data_uri
from tests.helpers import make_image


def _photo(width: int, height: int, seed: int = 0) -> PIL.Image.Image:
    """Photo-like pixels: noise on a gradient (PNG cannot shrink it much)."""
    rng = random.Random(seed)
    data = bytes(
        min(255, (x * 255 // width + rng.randrange(64))) for _ in range(height) for x in range(width) for _ in range(3)
    )
    return PIL.Image.frombytes("RGB", (width, height), data)


def _decode(uri: str) -> tuple[str, PIL.Image.Image]:
    head, data = uri.split(",", 1)
    return head, PIL.Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def test_encoding_is_lossless_and_chosen_by_cost() -> None:
    photo = _photo(400, 300)
    head, back = _decode(image_data_uri(photo))
    assert head == "data:image/bmp;base64" and back.tobytes() == photo.tobytes()
    page = make_image(400, 300, seed=3)  # flat areas and lines: PNG pays
    head, back = _decode(image_data_uri(page))
    assert head == "data:image/png;base64" and back.tobytes() == page.tobytes()
    assert len(image_data_uri(page)) < len(image_data_uri(photo)) / 5
    small = _photo(64, 64)  # small: PNG whatever it holds
    assert image_data_uri(small).startswith("data:image/png;base64")


def test_images_are_encoded_once_per_request(tiny_model: Path) -> None:
    preparer = RequestPreparer.from_pretrained(
        str(tiny_model), defaults=EngineDefaults.create(max_pixels=64 * 784), max_model_len=4096, extra="vllm"
    )
    big, small = _photo(1000, 800, 1), make_image(56, 56, 2)
    prep = preparer.prepare(ChatRequest([Message("user", [Image(big), Image(small), Text("compare")])]))
    first = _cached_uri(prep, prep.images[0])
    assert _cached_uri(prep, prep.images[0]) is first  # a retry does not encode it again
    resized = prep.resized_images()  # the resend without processor kwargs: at the planned sizes
    planned = preparer.profile.smart_resize(800, 1000, *prep.image_limits[0])
    assert (resized[0].height, resized[0].width) == planned and _cached_uri(prep, resized[0]) != first
    assert resized[1] is prep.images[1]  # already at its planned size: the same image...
    assert _cached_uri(prep, resized[1]) is _cached_uri(prep, prep.images[1])  # ...and the same encoding
