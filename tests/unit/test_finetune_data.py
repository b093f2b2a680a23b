"""The fine-tuning dataset format and mixing (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image as PILImage

from qwenvl.engine.base import resolve_lora
from qwenvl.errors import RequestError
from qwenvl.finetune import Example, _mix, load_examples
from qwenvl.messages import Image, Message, Text


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_jsonl_examples_resolve_images_next_to_the_file(tmp_path: Path) -> None:
    PILImage.new("RGB", (32, 32)).save(tmp_path / "a.png")
    path = _write(
        tmp_path / "train.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "Be terse."},
                    {
                        "role": "user",
                        "content": [
                            {"type": "image", "image": "a.png", "max_pixels": 3136},
                            {"type": "text", "text": "JSON?"},
                        ],
                    },
                    {"role": "assistant", "content": '{"a": 1}'},
                ]
            },
        ],
    )
    (example,) = load_examples(path)
    assert example.answer == '{"a": 1}' and [m.role for m in example.prompt] == ["system", "user"]
    image, text = example.prompt[1].content
    assert isinstance(image, Image) and image.source == str(tmp_path / "a.png") and image.max_pixels == 3136
    assert text == Text("JSON?")


@pytest.mark.parametrize(
    "bad",
    [
        {"messages": [{"role": "user", "content": "hi"}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "audio", "audio": "x"}]},
                {"role": "assistant", "content": "a"},
            ]
        },
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, bad: dict) -> None:
    path = _write(tmp_path / "bad.jsonl", [bad])
    with pytest.raises(RequestError, match="bad.jsonl:1"):
        load_examples(path)


def test_general_examples_are_mixed_in_by_ratio() -> None:
    domain = [Example([Message("user", f"d{i}")], "x") for i in range(10)]
    general = [Example([Message("user", f"g{i}")], "y") for i in range(3)]
    mixed = _mix(domain, general, 0.2, seed=0)
    assert len(mixed) == 12 and sum(e.answer == "y" for e in mixed) == 2
    assert _mix(domain, general, 0.2, seed=0) == mixed  # reproducible
    assert _mix(domain, [], 0.5, seed=0) == domain


def test_resolve_lora_checks_names_folders_and_rank(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32}))
    adapter = resolve_lora(str(tmp_path), {})
    assert adapter.rank == 32 and adapter.path == str(tmp_path.resolve())
    assert resolve_lora("mine", {"mine": str(tmp_path)}).name == "mine"
    with pytest.raises(RequestError, match="max_lora_rank=32"):
        resolve_lora(str(tmp_path), {}, max_rank=16)
    with pytest.raises(RequestError, match="registered: mine"):
        resolve_lora("other", {"mine": str(tmp_path)})
