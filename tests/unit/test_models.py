"""Model profiles: chosen from the checkpoint's config, and token counts equal to each family's own processor."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from qwenvl.budget import image_tokens, smart_resize
from qwenvl.errors import ModelError
from qwenvl.models import PROFILES, QWEN2_5_VL, QWEN2_VL, QWEN3_VL, load_profile, profile_for

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


@pytest.fixture(scope="module")
def processors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Each family's processor as its tiny checkpoint saves it (the real processor classes and defaults)."""
    from transformers import AutoProcessor

    from qwenvl.testing import build_tiny_model

    out = {}
    for family in FAMILIES:
        path = build_tiny_model(tmp_path_factory.mktemp(family), family=family)
        out[family] = AutoProcessor.from_pretrained(path)
    return out


def test_profile_from_config_never_from_name(tmp_path: Path) -> None:
    assert profile_for({"model_type": "qwen2_vl"}) is QWEN2_VL
    assert profile_for({"model_type": "qwen2_5_vl"}) is QWEN2_5_VL
    assert profile_for({"model_type": "qwen3_vl"}) is QWEN3_VL
    assert profile_for({"model_type": "qwen3_vl_moe"}) is QWEN3_VL
    assert profile_for({"architectures": ["Qwen2_5_VLForConditionalGeneration"]}) is QWEN2_5_VL
    # olmOCR-2 is a Qwen2.5-VL fine-tune: its folder name says nothing, its config says qwen2_5_vl
    folder = tmp_path / "olmOCR-2-7B-1025"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "qwen2_5_vl", "architectures": ["Qwen2_5_VLForConditionalGeneration"]})
    )
    assert load_profile(folder) is QWEN2_5_VL
    # a folder named like Qwen3-VL that holds a Qwen2-VL config is a Qwen2-VL
    misnamed = tmp_path / "Qwen3-VL-8B-Instruct"
    misnamed.mkdir()
    (misnamed / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    assert load_profile(misnamed) is QWEN2_VL


def test_unknown_or_unreadable_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="llava.*not a Qwen-VL family"):
        profile_for({"model_type": "llava", "architectures": ["LlavaForConditionalGeneration"]})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="cannot read"):
        load_profile(tmp_path)


def test_family_facts() -> None:
    assert [PROFILES[f].factor for f in FAMILIES] == [28, 28, 32]
    assert QWEN3_VL.min_pixels == 65536 and QWEN3_VL.max_pixels == 16777216  # its preprocessor_config.json
    assert QWEN2_VL.min_pixels == 3136 and QWEN2_VL.max_pixels == 12845056
    assert [PROFILES[f].box_convention for f in FAMILIES] == ["ref_grid", "pixels", "grid"]
    assert [PROFILES[f].video_time for f in FAMILIES] == ["none", "absolute", "timestamps"]
    assert image_tokens(640, 480, max_pixels=256 * 32 * 32, profile=QWEN3_VL) == QWEN3_VL.image_tokens(
        640, 480, max_pixels=256 * 32 * 32
    )
    assert QWEN3_VL.image_tokens(640, 480, max_pixels=256 * 32 * 32) == 13 * 18
    assert QWEN3_VL.image_tokens(32, 32) == 64  # Qwen3-VL's min_pixels lifts a tiny image to 256x256


def _sizes(profile_factor: int) -> list[tuple[int, int, int, int]]:
    """(height, width, min_pixels, max_pixels): 220 random sizes under the family's own budgets."""
    f2 = profile_factor**2
    budgets = [(4 * f2, 16384 * f2), (256 * f2, 1280 * f2), (4 * f2, 64 * f2), (64 * f2, 1024 * f2)]
    rng = random.Random(profile_factor)
    out = []
    while len(out) < 220:
        h = rng.randint(profile_factor, 3000)
        w = rng.randint(max(profile_factor, h // 150), min(3000, h * 150))
        out.append((h, w, *rng.choice(budgets)))
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_image_tokens_equal_the_family_processor(family: str, processors: dict[str, object]) -> None:
    """Over 220 sizes and four budgets per family: the count known before anything runs is the processor's."""
    profile = PROFILES[family]
    processor = processors[family]
    checked = 0
    for h, w, lo, hi in _sizes(profile.factor):
        pixels = np.zeros((h, w, 3), dtype=np.uint8)
        out = processor.image_processor(  # type: ignore[attr-defined]
            images=[pixels], size={"shortest_edge": lo, "longest_edge": hi}, return_tensors="np"
        )
        t, gh, gw = (int(v) for v in out["image_grid_thw"][0])
        assert t * gh * gw // profile.merge_size**2 == profile.image_tokens(w, h, lo, hi), (family, h, w, lo, hi)
        assert (gh * profile.patch_size, gw * profile.patch_size) == profile.smart_resize(h, w, lo, hi)
        checked += 1
    assert checked >= 200


def test_qwen2_defaults_unchanged() -> None:
    """budget's module functions stay Qwen2-VL's when no profile is given."""
    assert smart_resize(480, 640) == QWEN2_VL.smart_resize(480, 640)
    assert image_tokens(640, 480) == QWEN2_VL.image_tokens(640, 480)


def test_grounding_boxes_land_in_original_pixels_per_family() -> None:
    """Golden answers in each family's own convention, on a 1000x500 image."""
    from qwenvl.grounding import parse_boxes

    size = (1000, 500)
    qwen2 = "<|object_ref_start|>cat<|object_ref_end|><|box_start|>(100,200),(500,800)<|box_end|>"
    [box] = parse_boxes(qwen2, size, profile=QWEN2_VL)
    assert (box.label, box.xyxy) == ("cat", (100.0, 100.0, 500.0, 400.0))
    # Qwen2.5-VL: pixels of the image it saw; at 256 tokens max, 1000x500 is seen as 616x308
    assert QWEN2_5_VL.smart_resize(500, 1000, None, 256 * 28 * 28) == (308, 616)
    qwen25 = '```json\n[{"bbox_2d": [61, 30, 308, 154], "label": "cat"}]\n```'
    [box] = parse_boxes(qwen25, size, profile=QWEN2_5_VL, max_pixels=256 * 28 * 28)
    assert box.label == "cat"
    assert box.xyxy == pytest.approx((61 * 1000 / 616, 30 * 500 / 308, 308 * 1000 / 616, 154 * 500 / 308))
    # Qwen3-VL: the same JSON on a 0-1000 grid, whatever size it saw
    qwen3 = '[{"bbox_2d": [100, 200, 500, 800], "label": "cat"}]'
    [box] = parse_boxes(qwen3, size, profile=QWEN3_VL)
    assert (box.label, box.xyxy) == ("cat", (100.0, 100.0, 500.0, 400.0))
    [box] = parse_boxes(qwen3, size, profile=QWEN3_VL, max_pixels=64 * 32 * 32)
    assert box.xyxy == (100.0, 100.0, 500.0, 400.0)
    # read as Qwen2.5-VL pixels, the same answer would land elsewhere: the profile matters
    [other] = parse_boxes(qwen3, size, profile=QWEN2_5_VL)
    assert other.xyxy != box.xyxy


def test_fit_to_context_counts_in_the_family_tokens() -> None:
    from PIL import Image as PILImage

    from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text, fit_to_context

    big = PILImage.new("RGB", (2000, 1500))
    content = [Image(big), Image(big.copy()), Text("Compare.")]
    request = ChatRequest([Message("user", content)], SamplingOptions(max_tokens=100))
    fitted = fit_to_context(request, 1100, text_tokens=20, profile=QWEN3_VL)
    costs = [QWEN3_VL.image_tokens(2000, 1500, im.min_pixels, im.max_pixels) for im in fitted.images()]
    assert 20 + sum(costs) <= 1000 and sum(costs) > 900  # as large as fits, in 32-pixel tokens
    assert all(im.max_pixels is not None and im.min_pixels <= im.max_pixels for im in fitted.images())  # type: ignore[operator]
