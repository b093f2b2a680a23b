"""Dynamic resolution for Qwen2-VL by default: resized sizes and visual token counts.

The rules themselves (`smart_resize`, the family constants, `ModelProfile.image_limits` and token counts) live
in `qwenvl.models`; this module gives them Qwen2-VL's defaults (28-pixel tokens) for callers that don't name a
family. Pass ``profile=`` (a `qwenvl.models.ModelProfile`, e.g. from `qwenvl.models.load_profile`) for another
family, or use the profile's own methods. `smart_resize` gives the same sizes as qwen-vl-utils 0.0.14 wherever
that returns a usable size; the engines resize every image with it before vLLM sees it, so the token count known
here is the count vLLM processes. Fitting a prompt to the context is `qwenvl.fit_to_context`.
"""

from __future__ import annotations

from qwenvl.models import (
    FPS,
    FPS_MAX_FRAMES,
    FPS_MIN_FRAMES,
    FRAME_FACTOR,
    MAX_RATIO,
    QWEN2_VL,
    ModelProfile,
    smart_nframes,
    smart_resize,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FPS",
    "FPS_MAX_FRAMES",
    "FPS_MIN_FRAMES",
    "FRAME_FACTOR",
    "IMAGE_FACTOR",
    "MAX_PIXELS",
    "MAX_RATIO",
    "MIN_PIXELS",
    "VIDEO_MAX_PIXELS",
    "VIDEO_MIN_PIXELS",
    "grid_tokens",
    "image_tokens",
    "smart_nframes",
    "smart_resize",
    "video_tokens",
]

#: Qwen2-VL's numbers, for callers that don't name a family
IMAGE_FACTOR = QWEN2_VL.factor  # 28: one visual token covers 28x28 pixels
MIN_PIXELS = QWEN2_VL.min_pixels
MAX_PIXELS = QWEN2_VL.max_pixels
#: the engines' default per-image budget (Qwen2-VL's model card suggests 1280 tokens for documents)
DEFAULT_MAX_PIXELS = QWEN2_VL.default_max_pixels
VIDEO_MIN_PIXELS = QWEN2_VL.video_min_pixels
VIDEO_MAX_PIXELS = QWEN2_VL.video_max_pixels


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
    return (profile or QWEN2_VL).image_tokens(width, height, min_pixels, max_pixels)


def grid_tokens(height: int, width: int, *, profile: ModelProfile | None = None) -> int:
    """Return how many visual tokens an image already resized to ``height`` x ``width`` costs."""
    return (profile or QWEN2_VL).grid_tokens(height, width)


def video_tokens(nframes: int, height: int, width: int, *, profile: ModelProfile | None = None) -> int:
    """Return how many visual tokens ``nframes`` frames already resized to ``height`` x ``width`` cost."""
    return (profile or QWEN2_VL).video_tokens(nframes, height, width)
