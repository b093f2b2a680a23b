"""One pixel rule: the engine, the loader's VLM path and grounding plan the same size and tokens for an image.

Each family's tiny checkpoint gives the engine's side its real processor, which must agree too. The cases
include Qwen3-VL's 64-token minimum (a small image is scaled up to it; an image's own ``max_pixels`` below it
wins) and engines configured with their own defaults.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

from qwenvl import ChatRequest, Image, Message, Text
from qwenvl.engine.prepare import EngineDefaults, RequestPreparer
from qwenvl.grounding import box_scale, parse_boxes
from qwenvl.layout.model import BlockType
from qwenvl.layout.pipeline import DocumentParser
from qwenvl.layout.vlm import Tile, blocks_from_result, layout_request
from qwenvl.messages import ChatResult
from qwenvl.models import PROFILES, ModelProfile

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]
#: (width, height) of the images: a page, a thumbnail under every family's minimum, a thin strip, a photo
SIZES = [(1240, 1754), (40, 30), (900, 60), (2000, 1500)]
#: (engine's min_pixels, engine's max_pixels, image's min_pixels, image's max_pixels), as token counts
#: (None: the default)
LIMITS = [
    (None, None, None, None),
    (None, None, None, 16),  # the image's own maximum under Qwen3-VL's 64-token minimum
    (None, 300, None, None),  # an engine with its own budget
    (32, None, 8, 200),  # the image's own limits over the engine's
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from qwenvl.testing import build_tiny_model

    return {f: build_tiny_model(tmp_path_factory.mktemp(f), family=f) for f in FAMILIES}


class _PlanningEngine:
    """What `DocumentParser` reads of an engine to plan pages: its family and its defaults."""

    def __init__(self, profile: ModelProfile, defaults: EngineDefaults) -> None:
        self.profile = profile
        self.defaults = defaults


def _pixels(tokens: int | None, profile: ModelProfile) -> int | None:
    return None if tokens is None else tokens * profile.factor**2


def _processor_tokens(preparer: RequestPreparer, prep: Any) -> tuple[int, int, int]:
    """(tokens, height, width) the family's own processor makes of the prepared image."""
    kwargs = {"size": prep.image_size} if prep.image_size else {}
    out = preparer.template.image_processor(images=prep.images, **kwargs)
    t, h, w = (int(v) for v in out["image_grid_thw"][0])
    merge = preparer.profile.merge_size
    return t * h * w // merge**2, h * preparer.profile.patch_size, w * preparer.profile.patch_size


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_loader_and_grounding_plan_the_same_size(family: str, checkpoints: dict[str, Path]) -> None:
    profile = PROFILES[family]
    for engine_min, engine_max, own_min, own_max in LIMITS:
        defaults = EngineDefaults.create(
            min_pixels=_pixels(engine_min, profile), max_pixels=_pixels(engine_max, profile), profile=profile
        )
        preparer = RequestPreparer.from_pretrained(
            str(checkpoints[family]), defaults=defaults, max_model_len=32768, extra="vllm"
        )
        for width, height in SIZES:
            case = f"{family} {width}x{height} limits {(engine_min, engine_max, own_min, own_max)}"
            image = PILImage.new("RGB", (width, height), "white")
            lo, hi = _pixels(own_min, profile), _pixels(own_max, profile)
            # the engine: what it plans, and what the family's processor makes of what it sends
            request = ChatRequest([Message("user", [Image(image, min_pixels=lo, max_pixels=hi), Text("Read.")])])
            prep = preparer.prepare(request)
            [tokens] = prep.image_tokens
            assert _processor_tokens(preparer, prep)[0] == tokens, case
            seen_w, seen_h = profile.planned_size(
                width, height, lo, hi, default_min=defaults.min_pixels, default_max=defaults.max_pixels
            )
            assert tokens == (seen_w // profile.factor) * (seen_h // profile.factor), case
            # the loader's VLM path, planned by DocumentParser from the engine's family and defaults
            parser = DocumentParser(
                engine=_PlanningEngine(profile, defaults),  # type: ignore[arg-type]
                backend="vlm",
                min_pixels=lo,
                max_pixels=hi,
                coords="pixels",
            )
            config = parser.options.vlm
            page_request = layout_request(image, config)
            assert preparer.prepare(page_request).image_tokens == [tokens], case
            bbox_items = page_request.response_format["properties"]["blocks"]["items"]  # type: ignore[index]
            assert bbox_items["properties"]["bbox"]["items"]["maximum"] == max(seen_w, seen_h), case
            answer = ChatResult(
                text="", parsed={"blocks": [{"type": "paragraph", "bbox": [0, 0, seen_w, seen_h], "text": "x"}]}
            )
            [block] = blocks_from_result(
                answer, Tile(0, 0, width, height), config, page_number=1, page_size=(width, height)
            )
            assert block.type is BlockType.PARAGRAPH
            assert (block.bbox.x1, block.bbox.y1) == pytest.approx((width, height)), case
            # grounding: an answer in pixels of the image the model saw lands on the whole image
            sx, sy = box_scale(
                "pixels", (width, height), min_pixels=config.min_pixels, max_pixels=config.max_pixels, profile=profile
            )
            assert (seen_w * sx, seen_h * sy) == pytest.approx((width, height)), case
            if (engine_min, engine_max) == (None, None) and profile.box_convention != "grid":
                # and parse_boxes' defaults are the engines' defaults: a box over all the model saw is the image
                answer_text = f'[{{"bbox_2d": [0, 0, {seen_w}, {seen_h}]}}]'
                [box] = parse_boxes(answer_text, (width, height), min_pixels=lo, max_pixels=hi, profile=profile)
                assert (box.x1, box.y1) == pytest.approx((width, height)), case


def test_qwen3_minimum_is_64_tokens_everywhere() -> None:
    """A 40x30 thumbnail costs Qwen3-VL 64 tokens (its processor's minimum), not qwen-vl-utils' 4."""
    qwen3 = PROFILES["qwen3_vl"]
    w, h = qwen3.planned_size(40, 30)
    assert (w // 32) * (h // 32) >= 64
    config = DocumentParser(
        engine=_PlanningEngine(qwen3, EngineDefaults.create(profile=qwen3)),  # type: ignore[arg-type]
        backend="vlm",
        coords="pixels",
    ).options.vlm
    assert config.min_pixels == 64 * 32 * 32
    assert math.isclose(box_scale("pixels", (40, 30), profile=qwen3)[0], 40 / w)
