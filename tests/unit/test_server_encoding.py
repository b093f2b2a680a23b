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


def test_large_images_are_brought_down_to_their_planned_size_once(tiny_model: Path) -> None:
    preparer = RequestPreparer.from_pretrained(
        str(tiny_model), defaults=EngineDefaults.create(max_pixels=64 * 784), max_model_len=4096, extra="vllm"
    )
    big, small = _photo(1000, 800, 1), make_image(30, 30, 2)
    prep = preparer.prepare(ChatRequest([Message("user", [Image(big), Image(small), Text("compare")])]))
    planned = [
        preparer.profile.smart_resize(im.height, im.width, *limits)
        for im, limits in zip((big, small), prep.image_limits, strict=True)
    ]
    assert (prep.images[0].height, prep.images[0].width) == planned[0]  # resized here: fewer bytes travel
    assert prep.images[1].size == (30, 30) and planned[1] == (56, 56)  # smaller: the processor scales it up
    assert prep.image_tokens == [preparer.profile.grid_tokens(h, w) for h, w in planned]
    first = _cached_uri(prep, prep.images[0])
    assert _cached_uri(prep, prep.images[0]) is first  # a resend does not encode it again
    resized = prep.resized_images()  # the path without processor kwargs: the big one is unchanged
    assert resized[0] is prep.images[0] and _cached_uri(prep, resized[0]) is first
