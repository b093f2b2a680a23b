"""Dynamic resolution: resized sizes, visual token counts and fitting a prompt to the context.

`smart_resize` gives the same sizes as qwen-vl-utils 0.0.14 (the model authors' reference) wherever that
returns a usable size; the engines resize every image with it before vLLM sees it, so the token count known
here is the count vLLM processes. The functions default to Qwen2-VL (28-pixel tokens); pass ``profile=``
(a `qwenvl.models.ModelProfile`, e.g. from `qwenvl.models.load_profile`) for another family, or use the
profile's own methods.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from qwenvl.errors import ContextOverflowError, ImageSizeError, RequestError

if TYPE_CHECKING:
    from qwenvl.messages import ChatRequest, Image
    from qwenvl.models import ModelProfile

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FACTOR",
    "MAX_PIXELS",
    "MAX_RATIO",
    "MIN_PIXELS",
    "VIDEO_MAX_PIXELS",
    "VIDEO_MIN_PIXELS",
    "fit_to_context",
    "grid_tokens",
    "image_tokens",
    "smart_nframes",
    "smart_resize",
    "video_tokens",
]

PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
IMAGE_FACTOR = PATCH_SIZE * MERGE_SIZE  # 28: one visual token covers 28x28 pixels
MIN_PIXELS = 4 * IMAGE_FACTOR**2
MAX_PIXELS = 16384 * IMAGE_FACTOR**2
#: the engines' default per-image budget (Qwen2-VL's model card suggests 1280 tokens for documents)
DEFAULT_MAX_PIXELS = 1280 * IMAGE_FACTOR**2
MAX_RATIO = 200
VIDEO_MIN_PIXELS = 128 * IMAGE_FACTOR**2
VIDEO_MAX_PIXELS = 768 * IMAGE_FACTOR**2
FRAME_FACTOR = 2
FPS = 2.0
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768


def _round_by(number: float, factor: int) -> int:
    return round(number / factor) * factor


def _ceil_by(number: float, factor: int) -> int:
    return math.ceil(number / factor) * factor


def _floor_by(number: float, factor: int) -> int:
    return math.floor(number / factor) * factor


def smart_resize(
    height: int,
    width: int,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    factor: int = IMAGE_FACTOR,
) -> tuple[int, int]:
    """Return the (height, width) Qwen2-VL resizes an image to: multiples of ``factor``, area within
    [min_pixels, max_pixels], aspect ratio kept as closely as possible.

    Raises `ImageSizeError` for an empty image or an aspect ratio over 200. Two deliberate differences from
    qwen-vl-utils, both at extreme aspect ratios: where it returns a side of 0 (under a tiny ``max_pixels``)
    the side is ``factor``, as in transformers; and where its rounded size has a ratio over 200 (which the
    transformers processor refuses) the long side is trimmed to 200 times the short one.
    """
    min_pixels = MIN_PIXELS if min_pixels is None else min_pixels
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if min_pixels > max_pixels:
        raise ImageSizeError(f"min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels}); lower min_pixels.")
    if height <= 0 or width <= 0:
        raise ImageSizeError(f"an image of {width}x{height} pixels is empty; give an image with both sides > 0.")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_RATIO:
        raise ImageSizeError(
            f"an image of {width}x{height} pixels has aspect ratio {ratio:.1f}, over Qwen2-VL's limit of "
            f"{MAX_RATIO}; crop or pad it."
        )
    h_bar = max(factor, _round_by(height, factor))
    w_bar = max(factor, _round_by(width, factor))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, _floor_by(height / beta, factor))
        w_bar = max(factor, _floor_by(width / beta, factor))
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil_by(height * beta, factor)
        w_bar = _ceil_by(width * beta, factor)
    # Rounding a very thin side up to one factor can push the ratio past 200, which the transformers
    # processor then refuses: trim the long side back to 200 times the short one.
    if h_bar > w_bar * MAX_RATIO:
        h_bar = _floor_by(w_bar * MAX_RATIO, factor)
    elif w_bar > h_bar * MAX_RATIO:
        w_bar = _floor_by(h_bar * MAX_RATIO, factor)
    return h_bar, w_bar


def image_tokens(
    width: int,
    height: int,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    *,
    profile: ModelProfile | None = None,
) -> int:
    """Return how many visual tokens an image of ``width`` x ``height`` pixels costs (Qwen2-VL, or the
    family of ``profile``, whose pixel defaults then apply)."""
    if profile is not None:
        return profile.image_tokens(width, height, min_pixels, max_pixels)
    h, w = smart_resize(height, width, min_pixels, max_pixels)
    return grid_tokens(h, w)


def grid_tokens(height: int, width: int, *, profile: ModelProfile | None = None) -> int:
    """Return how many visual tokens an image already resized to ``height`` x ``width`` costs."""
    factor = IMAGE_FACTOR if profile is None else profile.factor
    return (height // factor) * (width // factor)


def smart_nframes(
    total_frames: int,
    video_fps: float,
    *,
    fps: float | None = None,
    nframes: int | None = None,
    min_frames: int | None = None,
    max_frames: int | None = None,
) -> int:
    """Return how many frames to sample from a video, as qwen-vl-utils does: an even number, at least 2.

    Give either ``fps`` (frames per second to sample, default 2) or ``nframes``.
    """
    if fps is not None and nframes is not None:
        raise RequestError("give either fps or nframes for a video, not both")
    if nframes is not None:
        n = _round_by(nframes, FRAME_FACTOR)
    else:
        want_fps = FPS if fps is None else fps
        lo = _ceil_by(FPS_MIN_FRAMES if min_frames is None else min_frames, FRAME_FACTOR)
        hi = _floor_by(min(FPS_MAX_FRAMES, total_frames) if max_frames is None else max_frames, FRAME_FACTOR)
        n_float = total_frames / video_fps * want_fps
        n = _floor_by(min(min(max(n_float, lo), hi), total_frames), FRAME_FACTOR)
    if not FRAME_FACTOR <= n <= total_frames:
        raise RequestError(
            f"a video of {total_frames} frames cannot give {n} sampled frames; the count must be even and in "
            f"[{FRAME_FACTOR}, {total_frames}]: change nframes/fps or give a longer video."
        )
    return n


def video_tokens(nframes: int, height: int, width: int, *, profile: ModelProfile | None = None) -> int:
    """Return how many visual tokens ``nframes`` frames already resized to ``height`` x ``width`` cost."""
    return (nframes // TEMPORAL_PATCH_SIZE) * grid_tokens(height, width, profile=profile)


def fit_to_context(
    request: ChatRequest,
    max_model_len: int,
    *,
    text_tokens: int,
    video_tokens: int = 0,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    reserve: int | None = None,
    profile: ModelProfile | None = None,
) -> ChatRequest:
    """Return ``request`` with per-image ``max_pixels`` lowered just enough that its prompt, plus the
    answer's ``max_tokens`` (or ``reserve``), fits ``max_model_len``.

    Images must be loaded (their `Image.size` known); ``min_pixels``/``max_pixels`` are the defaults for
    images without their own limits; ``text_tokens`` and ``video_tokens`` count the rest of the prompt.
    One pixel cap is searched for all images, so large images shrink first and small ones stay sharp.
    ``profile`` is the model family (default Qwen2-VL), whose pixel defaults apply where these are None.
    Raises `ContextOverflowError` saying by how many tokens the prompt overflows at the smallest size.
    """
    from qwenvl.models import QWEN2_VL

    fam = profile or QWEN2_VL
    min_pixels = fam.min_pixels if min_pixels is None else min_pixels
    max_pixels = fam.max_pixels if max_pixels is None else max_pixels
    unit = fam.factor**2
    images = request.images()
    room = max_model_len - (request.sampling.max_tokens if reserve is None else reserve)
    fixed = text_tokens + video_tokens

    def limits(img: Image) -> tuple[int, int]:
        hi = img.max_pixels or max_pixels
        return (img.min_pixels or (min(min_pixels, hi) if img.max_pixels else min_pixels), hi)

    def cost(cap: int | None) -> int:
        total = fixed
        for img in images:
            if img.size is None:
                raise TypeError("fit_to_context needs loaded images (PIL sources); load them first")
            lo, hi = limits(img)
            if cap is not None:
                hi, lo = min(hi, cap), min(lo, cap)
            total += fam.image_tokens(img.size[0], img.size[1], lo, hi)
        return total

    needed = cost(None)
    if needed <= room:
        return request
    floor = 4  # visual tokens: qwen-vl-utils' smallest image in every family
    if not images or cost(floor * unit) > room:
        smallest = cost(floor * unit) if images else needed
        raise ContextOverflowError(
            f"the prompt needs {needed} tokens ({smallest} with every image at its smallest) but only {room} fit "
            f"(max_model_len {max_model_len} minus {max_model_len - room} kept for the answer): "
            f"{smallest - room} tokens too many. Shorten the text, send fewer images or videos, lower max_tokens, "
            "or raise max_model_len.",
            prompt_tokens=smallest,
            max_model_len=room,
        )
    top = max(limits(img)[1] for img in images) // unit
    lo_cap, hi_cap = floor, top  # cost(lo_cap) fits, cost(hi_cap) does not
    while hi_cap - lo_cap > 1:
        mid = (lo_cap + hi_cap) // 2
        if cost(mid * unit) <= room:
            lo_cap = mid
        else:
            hi_cap = mid
    cap = lo_cap * unit

    def shrink(img: Image) -> Image:
        lo, hi = limits(img)
        if hi <= cap:
            return img
        return replace(img, min_pixels=min(lo, cap), max_pixels=cap)

    return request.map_images(shrink)
