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
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from qwenvl.errors import ModelError

__all__ = [
    "PROFILES",
    "QWEN2_5_VL",
    "QWEN2_VL",
    "QWEN3_VL",
    "ModelProfile",
    "load_profile",
    "profile_for",
]

#: how boxes in answers are written: Qwen2-VL's ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` on a 0-1000 grid,
#: Qwen2.5-VL's JSON ``bbox_2d`` in pixels of the resized input, Qwen3-VL's JSON ``bbox_2d`` on a 0-1000 grid
BoxConvention = Literal["ref_grid", "pixels", "grid"]
#: how a video's time reaches the model: not at all (Qwen2-VL: frame order only), as absolute time in the
#: rotary position ids (Qwen2.5-VL: ``second_per_grid_ts``), or as ``<t seconds>`` text before each frame
#: pair (Qwen3-VL)
VideoTime = Literal["none", "absolute", "timestamps"]


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
        """The (height, width) this family's processor resizes an image to (see `qwenvl.budget.smart_resize`)."""
        from qwenvl.budget import smart_resize

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
