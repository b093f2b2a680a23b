"""smart_resize / image_tokens against qwen-vl-utils 0.0.14 and the transformers processor."""

from __future__ import annotations

import random

import numpy as np
import pytest

from qwenvl.budget import IMAGE_FACTOR, MAX_PIXELS, MIN_PIXELS, image_tokens, smart_nframes, smart_resize
from qwenvl.errors import ImageSizeError, RequestError


def _sizes() -> list[tuple[int, int, int, int]]:
    """(height, width, min_pixels, max_pixels): extremes and 200 random ones."""
    budgets = [(MIN_PIXELS, MAX_PIXELS), (256 * 28 * 28, 1280 * 28 * 28), (4 * 28 * 28, 64 * 28 * 28), (3136, 3136)]
    fixed = [
        (1, 1),
        (1, 5),
        (3, 3),
        (27, 29),
        (28, 28),
        (1, 199),
        (199, 1),
        (2, 398),
        (5, 995),
        (14, 2786),
        (28, 5572),
        (40, 7999),
        (480, 640),
        (1080, 1920),
        (2160, 3840),
        (4000, 3000),
        (1754, 1240),
        (20000, 15000),
        (50000, 300),
        (100, 19999),
        (56, 56),
        (13, 2600),
        (10000, 10000),
    ]
    out = [(h, w, lo, hi) for h, w in fixed for lo, hi in budgets]
    rng = random.Random(0)
    for _ in range(200):
        h = rng.randint(1, 6000)
        w = rng.randint(max(1, h // 199), min(6000, h * 199))
        lo, hi = rng.choice(budgets)
        out.append((h, w, lo, hi))
    return out


SIZES = _sizes()


def test_matches_qwen_vl_utils() -> None:
    from qwen_vl_utils.vision_process import smart_resize as reference

    assert len(SIZES) >= 200
    adjusted = 0
    for h, w, lo, hi in SIZES:
        ref = reference(h, w, factor=IMAGE_FACTOR, min_pixels=lo, max_pixels=hi)
        ours = smart_resize(h, w, lo, hi)
        if 0 in ref:  # qwen-vl-utils floors a side to 0 here; we keep one factor, as transformers does
            adjusted += 1
            assert min(ours) == IMAGE_FACTOR
        elif max(ref) / min(ref) > 200:  # the processor would refuse this size: we trim the long side
            adjusted += 1
            assert min(ours) == min(ref) and max(ours) <= 200 * min(ref)
        else:
            assert ours == ref, (h, w, lo, hi)
    assert len(SIZES) - adjusted >= 200  # compared exactly


def test_processor_grid_matches_image_tokens_after_our_resize() -> None:
    """What the engines do: resize with smart_resize, then the processor must keep that size."""
    from transformers import Qwen2VLImageProcessor

    from qwenvl.media import resize_image

    processor = Qwen2VLImageProcessor()
    rng = random.Random(1)
    checked = 0
    for h, w, lo, hi in SIZES:
        if h * w > 4000 * 4000:
            continue  # too big to allocate for every case; covered by the arithmetic test above
        img = _image(w, h, rng)
        resized = resize_image(img, lo, hi)
        area = resized.width * resized.height
        grid = processor(images=[resized], size={"shortest_edge": area, "longest_edge": area}, return_tensors="np")[
            "image_grid_thw"
        ][0]
        assert int(np.prod(grid)) // 4 == image_tokens(w, h, lo, hi), (h, w, lo, hi)
        checked += 1
    assert checked >= 200


def test_raw_processor_agrees_except_round_to_zero() -> None:
    """transformers' own smart_resize on raw sizes differs from ours only at extreme shapes: a side under
    14 px (it rounds to 0 there before lifting) or a result it would itself refuse (ratio over 200)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_resize

    differ = []
    for h, w, lo, hi in SIZES:
        theirs = hf_resize(h, w, IMAGE_FACTOR, lo, hi)
        if theirs != smart_resize(h, w, lo, hi):
            differ.append((h, w, lo, hi))
            assert round(min(h, w) / IMAGE_FACTOR) == 0 or max(theirs) / min(theirs) > 200, (h, w, lo, hi)
    assert len(differ) < len(SIZES)


def _image(width: int, height: int, rng: random.Random):  # noqa: ANN202
    from PIL import Image

    return Image.new("RGB", (width, height), (rng.randint(0, 255), 0, 0))


def test_image_tokens_examples() -> None:
    assert image_tokens(640, 480, max_pixels=256 * 28 * 28) == 13 * 18
    assert image_tokens(28, 28) == 4  # min_pixels lifts a tiny image to 56x56
    assert image_tokens(1, 1) == 4


@pytest.mark.parametrize("h,w", [(0, 10), (10, 0), (1, 201), (5000, 20)])
def test_bad_sizes_raise(h: int, w: int) -> None:
    with pytest.raises(ImageSizeError):
        smart_resize(h, w)


def test_min_over_max_raises() -> None:
    with pytest.raises(ImageSizeError, match="min_pixels"):
        smart_resize(100, 100, min_pixels=5000, max_pixels=4000)


def test_smart_nframes_matches_qwen_vl_utils() -> None:
    from qwen_vl_utils.vision_process import smart_nframes as reference

    for total in (4, 5, 17, 60, 300, 2000):
        for video_fps in (1.0, 2.0, 24.0, 30.0):
            for fps in (0.5, 1.0, 2.0):
                assert smart_nframes(total, video_fps, fps=fps) == reference({"fps": fps}, total, video_fps)
        for n in (2, 3, 4):
            if n <= total:
                assert smart_nframes(total, 30.0, nframes=n) == reference({"nframes": n}, total, 30.0)
    with pytest.raises(RequestError, match="even"):
        smart_nframes(1, 2.0, nframes=2)
