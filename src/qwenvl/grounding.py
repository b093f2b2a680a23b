"""Grounding boxes in model answers, mapped to pixels of the original image, and drawing them.

Three conventions are read (a model's profile, `qwenvl.models`, says which one it was trained on):

- Qwen2-VL: ``<|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>``, with
  coordinates on a 0-1000 grid over the image (one label may be followed by several boxes; a box may come
  without a label).
- Qwen2.5-VL: JSON such as ``[{"bbox_2d": [x1, y1, x2, y2], "label": "cat"}]`` (possibly in a ```json fence),
  with coordinates in pixels of the image as the model saw it (after `smart_resize`).
- Qwen3-VL: the same JSON, with coordinates on a 0-1000 grid over the image (Qwen3-VL's cookbooks).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import PIL.Image
import PIL.ImageDraw
from pydantic import Field

from qwenvl.boxes import BBox
from qwenvl.errors import QwenVLError
from qwenvl.models import QWEN2_5_VL, ModelProfile

__all__ = [
    "GroundedBox",
    "GroundingParseError",
    "box_scale",
    "draw_boxes",
    "parse_bbox_2d",
    "parse_boxes",
    "parse_ref_boxes",
]

GRID = 1000

_REF_OR_BOX = re.compile(
    r"<\|object_ref_start\|>(?P<label>.*?)<\|object_ref_end\|>|<\|box_start\|>(?P<box>.*?)<\|box_end\|>",
    re.DOTALL,
)
_POINT_PAIR = re.compile(
    r"^\s*\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)\s*,\s*\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)\s*$"
)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)


class GroundingParseError(QwenVLError, ValueError):
    """A box in a model answer is malformed (raised only with ``strict=True``)."""


class GroundedBox(BBox):
    """A box the model pointed at, in pixels of the original image (a `BBox`: x0, y0, x1, y1 = left, top,
    right, bottom), with its label if any."""

    label: str | None = Field(default=None, description="The object the box is about, when the model named it")


def parse_ref_boxes(text: str, *, strict: bool = False) -> list[tuple[str | None, tuple[float, float, float, float]]]:
    """The Qwen2-VL boxes in ``text`` as (label, (x1, y1, x2, y2)) on the 0-1000 grid.

    Malformed boxes (not two points, coordinates off the grid) are skipped, or raise `GroundingParseError`
    with ``strict=True``.
    """
    out: list[tuple[str | None, tuple[float, float, float, float]]] = []
    label: str | None = None
    for match in _REF_OR_BOX.finditer(text):
        if match.group("label") is not None:
            label = match.group("label").strip()
            continue
        raw = match.group("box")
        point = _POINT_PAIR.match(raw)
        coords = tuple(float(v) for v in point.groups()) if point else None
        if coords is None or not all(0 <= v <= GRID for v in coords):
            if strict:
                raise GroundingParseError(f"malformed Qwen2-VL box {raw!r}; expected (x1,y1),(x2,y2) in 0-1000.")
            continue
        x1, y1, x2, y2 = coords
        box = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
        # A label applies to the boxes right after it; a later bare box reuses it (several instances).
        out.append((label, box))
    return out


def parse_bbox_2d(text: str, *, strict: bool = False) -> list[tuple[str | None, tuple[float, float, float, float]]]:
    """The Qwen2.5-VL ``bbox_2d`` boxes in ``text`` as (label, (x1, y1, x2, y2)) in model-input pixels."""
    items = _json_items(text)
    out: list[tuple[str | None, tuple[float, float, float, float]]] = []
    for item in items:
        bbox = item.get("bbox_2d") if isinstance(item, dict) else None
        valid = (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in bbox)
        )
        if not valid:
            if strict:
                raise GroundingParseError(f"malformed bbox_2d item {item!r}; expected 4 non-negative numbers.")
            continue
        x1, y1, x2, y2 = (float(v) for v in bbox)  # type: ignore[union-attr]
        label = item.get("label")
        out.append((str(label) if label is not None else None, (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))))
    return out


def box_scale(
    convention: str,
    image_size: tuple[float, float],
    *,
    model_input_size: tuple[int, int] | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    profile: ModelProfile | None = None,
) -> tuple[float, float]:
    """The (x, y) factors from a model's box coordinates to pixels of an image of ``image_size`` (width, height).

    ``convention`` "grid" (or "ref_grid"): a 0-1000 grid over the image (Qwen2-VL, Qwen3-VL). "pixels":
    Qwen2.5-VL's pixels of the image the model saw, ``model_input_size`` (width, height), or else the size the
    engines plan for ``image_size`` under the request's limits (`ModelProfile.planned_size` of ``profile``,
    default Qwen2.5-VL; None limits are the engines' defaults).
    """
    width, height = image_size
    if convention in ("grid", "ref_grid"):
        return width / GRID, height / GRID
    if model_input_size is None:
        family = profile or QWEN2_5_VL
        model_input_size = family.planned_size(width, height, min_pixels, max_pixels)  # type: ignore[arg-type]
    return width / model_input_size[0], height / model_input_size[1]


def parse_boxes(
    text: str,
    image_size: tuple[int, int],
    *,
    model_input_size: tuple[int, int] | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    strict: bool = False,
    profile: ModelProfile | None = None,
) -> list[GroundedBox]:
    """All boxes in an answer about an image of ``image_size`` (width, height), in that image's pixels.

    ``profile`` is the model's family (``engine.profile``), which says how its ``bbox_2d`` boxes are written:
    on the 0-1000 grid (Qwen3-VL), or (Qwen2.5-VL, and the default without a profile) in pixels of the size
    the model saw: ``model_input_size`` (width, height), else the size the engines plan for ``image_size``
    under ``min_pixels`` / ``max_pixels`` (pass the limits the request used; None: the engines' defaults,
    1280 tokens at most). Qwen2-VL ``<|box_start|>`` boxes are on the 0-1000 grid. Boxes are clipped to the
    image.
    """
    boxes: list[GroundedBox] = []
    json_convention = "grid" if profile is not None and profile.box_convention == "grid" else "pixels"
    found = [("grid", parse_ref_boxes(text, strict=strict)), (json_convention, parse_bbox_2d(text, strict=strict))]
    for convention, items in found:
        if not items:
            continue
        sx, sy = box_scale(
            convention,
            image_size,
            model_input_size=model_input_size,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
            profile=profile,
        )
        for label, (x1, y1, x2, y2) in items:
            box = GroundedBox(x0=x1 * sx, y0=y1 * sy, x1=x2 * sx, y1=y2 * sy, label=label)
            boxes.append(box.clip(*image_size))
    return [b for b in boxes if b.x1 > b.x0 and b.y1 > b.y0]


def draw_boxes(
    image: PIL.Image.Image,
    boxes: Sequence[GroundedBox],
    *,
    color: str | tuple[int, int, int] = (230, 40, 40),
    width: int = 3,
    labels: bool = True,
) -> PIL.Image.Image:
    """A copy of ``image`` with ``boxes`` outlined (and labelled)."""
    out = image.convert("RGB").copy()
    draw = PIL.ImageDraw.Draw(out)
    for box in boxes:
        draw.rectangle(box.xyxy, outline=color, width=width)
        if labels and box.label:
            x, y = box.x0 + width, max(0.0, box.y0 - 12)
            draw.text((x, y), box.label, fill=color)
    return out


def _json_items(text: str) -> list[Any]:
    candidates = [m.group(1) for m in _FENCE.finditer(text)] or [text]
    items: list[Any] = []
    for candidate in candidates:
        start = min((i for i in (candidate.find("["), candidate.find("{")) if i >= 0), default=-1)
        if start < 0:
            continue
        try:
            data, _ = json.JSONDecoder().raw_decode(candidate[start:])
        except json.JSONDecodeError:
            continue
        items.extend(data if isinstance(data, list) else [data])
    return items
