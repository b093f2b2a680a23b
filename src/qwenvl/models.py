"""Model profiles: what differs between Qwen2-VL, Qwen2.5-VL and Qwen3-VL, read from a checkpoint's config.

A profile is chosen from the checkpoint's own ``config.json`` (``model_type``, then ``architectures``), never
from its name, so fine-tunes (olmOCR-2 is a Qwen2.5-VL; a LoRA-merged checkpoint keeps its base's type) get
their family's profile. Everything family-specific lives here: the patch/merge factor and pixel defaults the
token counts depend on, how video time is encoded, the transformers model class, the grounding-box
convention and whether the chat template renders tools itself.

    >>> profile = load_profile("Qwen/Qwen3-VL-8B-Instruct")   # or a local folder
    >>> profile.image_tokens(1700, 2200)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from qwenvl.errors import ImageSizeError, ModelError, RequestError

__all__ = [
    "PROFILES",
    "QWEN2_5_VL",
    "QWEN2_VL",
    "QWEN3_VL",
    "ModelProfile",
    "load_profile",
    "profile_for",
    "smart_nframes",
    "smart_resize",
]

#: the largest aspect ratio the processors accept
MAX_RATIO = 200
#: qwen-vl-utils' video sampling: frames come in pairs, 2 per second by default, 4 to 768 of them
FRAME_FACTOR = 2
FPS = 2.0
FPS_MIN_FRAMES = 4
FPS_MAX_FRAMES = 768


#: how boxes in answers are written: Qwen2-VL's ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` on a 0-1000 grid,
#: Qwen2.5-VL's JSON ``bbox_2d`` in pixels of the resized input, Qwen3-VL's JSON ``bbox_2d`` on a 0-1000 grid
BoxConvention = Literal["ref_grid", "pixels", "grid"]
#: how a video's time reaches the model: not at all (Qwen2-VL: frame order only), as absolute time in the
#: rotary position ids (Qwen2.5-VL: ``second_per_grid_ts``), or as ``<t seconds>`` text before each frame
#: pair (Qwen3-VL)
VideoTime = Literal["none", "absolute", "timestamps"]


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
    factor: int = 28,
) -> tuple[int, int]:
    """Return the (height, width) Qwen2-VL resizes an image to: multiples of ``factor``, area within
    [min_pixels, max_pixels], aspect ratio kept as closely as possible.

    Raises `ImageSizeError` for an empty image or an aspect ratio over 200. Two deliberate differences from
    qwen-vl-utils, both at extreme aspect ratios: where it returns a side of 0 (under a tiny ``max_pixels``)
    the side is ``factor``, as in transformers; and where its rounded size has a ratio over 200 (which the
    transformers processor refuses) the long side is trimmed to 200 times the short one.
    """
    min_pixels = QWEN2_VL.min_pixels if min_pixels is None else min_pixels
    max_pixels = QWEN2_VL.max_pixels if max_pixels is None else max_pixels
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


@dataclass(frozen=True)
class ModelProfile:
    """The facts of one Qwen-VL family that token counts, prompts, boxes and model loading depend on."""

    #: ``model_type`` of the family's config (the key of `PROFILES`)
    family: str
    #: the family's display name
    name: str
    #: side of one vision patch in pixels
    patch_size: int
    #: ``transformers`` class of the full model (image-text-to-text)
    transformers_class: str
    box_convention: BoxConvention
    video_time: VideoTime
    #: whether the model's own chat template renders ``tools`` (else qwenvl writes the Hermes tool section)
    template_tools: bool
    #: the processor's default image pixel limits, in visual tokens (``min_pixels`` / ``max_pixels`` over
    #: factor squared)
    min_tokens: int = 4
    max_tokens: int = 16384
    #: qwen-vl-utils' per-frame video limits, in visual tokens
    video_min_tokens: int = 128
    video_max_tokens: int = 768
    #: whether the video processor's size limits count all frames (Qwen3-VL) or one frame (Qwen2/2.5-VL)
    video_size_counts_frames: bool = False
    merge_size: int = 2
    temporal_patch_size: int = 2
    #: other ``model_type`` values served by this profile (MoE variants)
    aliases: tuple[str, ...] = ()

    @property
    def factor(self) -> int:
        """Side in pixels of the square one visual token covers (patch size x merge size)."""
        return self.patch_size * self.merge_size

    @property
    def min_pixels(self) -> int:
        """The processor's default smallest image area."""
        return self.min_tokens * self.factor**2

    @property
    def max_pixels(self) -> int:
        """The processor's default largest image area."""
        return self.max_tokens * self.factor**2

    @property
    def default_max_pixels(self) -> int:
        """The engines' default per-image budget: 1280 visual tokens (the model cards' advice for documents)."""
        return 1280 * self.factor**2

    def image_limits(
        self,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        *,
        default_min: int | None = None,
        default_max: int | None = None,
    ) -> tuple[int, int]:
        """The (min_pixels, max_pixels) an image is resized under: its own limits where given, else the engine's
        defaults ``default_min`` / ``default_max`` (None: this family's `min_pixels` and the engines'
        `default_max_pixels`). A default minimum above the image's own maximum (Qwen3-VL's is 64 tokens) gives
        way to that maximum. The engines, the loader's VLM path and grounding all plan sizes with this."""
        hi = max_pixels or default_max or self.default_max_pixels
        floor = default_min or self.min_pixels
        lo = min_pixels or (min(floor, hi) if max_pixels else floor)
        return lo, hi

    def planned_size(
        self,
        width: int,
        height: int,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        *,
        default_min: int | None = None,
        default_max: int | None = None,
    ) -> tuple[int, int]:
        """The (width, height) the model sees of a ``width`` x ``height`` image under `image_limits`."""
        lo, hi = self.image_limits(min_pixels, max_pixels, default_min=default_min, default_max=default_max)
        h, w = self.smart_resize(height, width, lo, hi)
        return w, h

    @property
    def video_min_pixels(self) -> int:
        """Smallest frame area qwen-vl-utils resizes video frames to."""
        return self.video_min_tokens * self.factor**2

    @property
    def video_max_pixels(self) -> int:
        """Largest frame area qwen-vl-utils resizes video frames to."""
        return self.video_max_tokens * self.factor**2

    def smart_resize(
        self, height: int, width: int, min_pixels: int | None = None, max_pixels: int | None = None
    ) -> tuple[int, int]:
        """The (height, width) this family's processor resizes an image to (see `smart_resize`); None limits are
        the processor's defaults (`min_pixels`, `max_pixels`)."""
        return smart_resize(
            height,
            width,
            self.min_pixels if min_pixels is None else min_pixels,
            self.max_pixels if max_pixels is None else max_pixels,
            factor=self.factor,
        )

    def grid_tokens(self, height: int, width: int) -> int:
        """Visual tokens of an image already resized to ``height`` x ``width``."""
        return (height // self.factor) * (width // self.factor)

    def image_tokens(
        self, width: int, height: int, min_pixels: int | None = None, max_pixels: int | None = None
    ) -> int:
        """Visual tokens an image of ``width`` x ``height`` pixels costs under these limits."""
        return self.grid_tokens(*self.smart_resize(height, width, min_pixels, max_pixels))

    def video_tokens(self, nframes: int, height: int, width: int) -> int:
        """Visual tokens of ``nframes`` frames already resized to ``height`` x ``width`` (without the
        timestamp text Qwen3-VL adds)."""
        return (nframes // self.temporal_patch_size) * self.grid_tokens(height, width)

    def video_size(self, nframes: int, height: int, width: int) -> int:
        """The area the video processor compares with its size limits for these frames."""
        return (nframes if self.video_size_counts_frames else 1) * height * width

    def matches(self, model_type: str) -> bool:
        """Whether a config's ``model_type`` belongs to this family."""
        return model_type == self.family or model_type in self.aliases


QWEN2_VL = ModelProfile(
    family="qwen2_vl",
    name="Qwen2-VL",
    patch_size=14,
    transformers_class="Qwen2VLForConditionalGeneration",
    box_convention="ref_grid",
    video_time="none",
    template_tools=False,
)
QWEN2_5_VL = ModelProfile(
    family="qwen2_5_vl",
    name="Qwen2.5-VL",
    patch_size=14,
    transformers_class="Qwen2_5_VLForConditionalGeneration",
    box_convention="pixels",
    video_time="absolute",
    template_tools=False,
)
# Qwen3-VL's processor: 16-pixel patches, images between 65536 and 16777216 pixels (64 and 16384 tokens of
# 32x32), videos limited over all frames; boxes as bbox_2d on a 0-1000 grid (Qwen3-VL cookbooks).
QWEN3_VL = ModelProfile(
    family="qwen3_vl",
    name="Qwen3-VL",
    patch_size=16,
    transformers_class="Qwen3VLForConditionalGeneration",
    box_convention="grid",
    video_time="timestamps",
    template_tools=True,
    min_tokens=64,
    max_tokens=16384,
    video_size_counts_frames=True,
    aliases=("qwen3_vl_moe",),
)

#: every supported family, by ``model_type``
PROFILES: dict[str, ModelProfile] = {p.family: p for p in (QWEN2_VL, QWEN2_5_VL, QWEN3_VL)}

_ARCHITECTURES = {
    "Qwen2VLForConditionalGeneration": QWEN2_VL,
    "Qwen2_5_VLForConditionalGeneration": QWEN2_5_VL,
    "Qwen3VLForConditionalGeneration": QWEN3_VL,
    "Qwen3VLMoeForConditionalGeneration": QWEN3_VL,
}


def profile_for(config: dict[str, Any] | Any) -> ModelProfile:
    """The profile of a checkpoint from its config (a ``config.json`` dict or a transformers config).

    Raises `ModelError` naming the model type when the checkpoint is not a Qwen-VL model.
    """
    data = config if isinstance(config, dict) else config.to_dict()
    model_type = str(data.get("model_type", ""))
    for profile in PROFILES.values():
        if profile.matches(model_type):
            return profile
    for arch in data.get("architectures") or []:
        if arch in _ARCHITECTURES:
            return _ARCHITECTURES[arch]
    known = ", ".join(sorted(PROFILES))
    raise ModelError(
        f"the checkpoint's config says model_type {model_type!r} (architectures {data.get('architectures')}), "
        f"which is not a Qwen-VL family qwenvl serves ({known}); give a Qwen2-VL, Qwen2.5-VL or Qwen3-VL "
        "checkpoint or a fine-tune of one."
    )


def load_profile(model: str | os.PathLike[str], **kwargs: Any) -> ModelProfile:
    """The profile of ``model``: a local checkpoint folder (its ``config.json``) or a hub id (its config, read
    with transformers' ``AutoConfig``; ``kwargs`` go to it, e.g. ``revision``)."""
    path = Path(os.fspath(model)).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
        try:
            data = json.loads(config_file.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read {config_file}: {exc}; is {path} a model checkpoint folder?") from exc
        return profile_for(data)
    from qwenvl._lazy import require

    transformers = require("transformers", "transformers")
    try:
        config = transformers.AutoConfig.from_pretrained(os.fspath(model), **kwargs)
    except Exception as exc:  # noqa: BLE001 - hub/network/parse errors alike
        raise ModelError(f"cannot read the config of model {os.fspath(model)!r}: {exc}") from exc
    return profile_for(config)
