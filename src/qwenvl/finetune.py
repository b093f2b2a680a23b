"""LoRA fine-tuning of Qwen2-VL, Qwen2.5-VL and Qwen3-VL on image -> answer examples, saved as a PEFT adapter
that vLLM serves as it is.

Loss is taken on the assistant tokens only (the prompt, the image pads and the system prompt are masked); the
vision encoder stays frozen unless ``train_vision``; prompts are rendered exactly as the engines render them
at inference (same chat template, same image sizes), so what is learnt is what is served. Training runs on
transformers' ``Trainer``. Needs the ``train`` extra (peft, accelerate; torch and transformers).

Dataset format (JSON lines), one conversation per line, in the shape of the core's chat types:

    {"messages": [{"role": "user", "content": [{"type": "image", "image": "inv1.png", "max_pixels": 200704},
                                               {"type": "text", "text": "Invoice to JSON"}]},
                  {"role": "assistant", "content": "{\\"total\\": 12.5}"}]}
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwenvl._lazy import require
from qwenvl.engine.base import EngineDefaults, RequestPreparer
from qwenvl.errors import RequestError
from qwenvl.messages import ChatRequest, Image, Message, Text
from qwenvl.models import ModelProfile, load_profile

__all__ = ["Example", "FinetuneConfig", "FinetuneResult", "finetune", "load_examples", "merge_adapter"]

_log = logging.getLogger(__name__)

#: The language model's projections: what vLLM applies LoRA to.
LANGUAGE_TARGETS = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
#: The vision tower's projections, added with ``train_vision`` (serve such an adapter merged).
VISION_TARGETS = r".*visual.*\.(qkv|proj|fc1|fc2|linear_fc1|linear_fc2|gate_proj|up_proj|down_proj)$"


@dataclass
class Example:
    """One training conversation: the messages before the answer, and the answer."""

    prompt: list[Message]
    answer: str


def _message(raw: dict[str, Any], where: str) -> Message:
    content = raw.get("content", "")
    if isinstance(content, str):
        return Message(raw["role"], content)
    parts: list[Text | Image] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append(Text(part["text"]))
        elif kind in ("image", "image_url"):
            src = part.get("image") or (part.get("image_url") or {}).get("url") or part.get("image_url")
            parts.append(Image(src, min_pixels=part.get("min_pixels"), max_pixels=part.get("max_pixels")))
        else:
            raise RequestError(f"{where}: content part type {kind!r} is not text or image")
    return Message(raw["role"], parts)


def load_examples(path: str | os.PathLike[str]) -> list[Example]:
    """Examples from a JSONL file; image paths are relative to the file's folder."""
    path = Path(path)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        raw = json.loads(line)
        messages = raw.get("messages") or []
        if not messages or messages[-1].get("role") != "assistant" or not isinstance(messages[-1]["content"], str):
            raise RequestError(f"{where}: the last message must be the assistant's answer, as a string")
        for m in messages:
            for part in m.get("content") if isinstance(m.get("content"), list) else []:
                if part.get("type") == "image" and isinstance(part.get("image"), str):
                    img = part["image"]
                    if "://" not in img and not img.startswith("data:") and not Path(img).is_absolute():
                        part["image"] = str(path.parent / img)
        out.append(Example([_message(m, where) for m in messages[:-1]], messages[-1]["content"]))
    if not out:
        raise RequestError(f"{path}: no examples")
    return out


@dataclass
class FinetuneConfig:
    """Training options. ``mix_ratio``: general examples added, as a fraction of the domain examples."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = LANGUAGE_TARGETS
    train_vision: bool = False
    learning_rate: float = 2e-4
    epochs: float = 3.0
    max_steps: int = -1
    batch_size: int = 1
    gradient_accumulation: int = 1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    mix_ratio: float = 0.0
    seed: int = 0
    min_pixels: int | None = None
    max_pixels: int | None = None
    dtype: str = "float32"
    logging_steps: int = 1


@dataclass
class FinetuneResult:
    """Where the adapter went and how the loss went."""

    adapter_path: Path
    losses: list[float] = field(default_factory=list)
    examples: int = 0
    trainable_parameters: int = 0


def _mix(domain: list[Example], general: list[Example], ratio: float, seed: int) -> list[Example]:
    if not general or ratio <= 0:
        return list(domain)
    rng = random.Random(seed)  # noqa: S311 - reproducible sampling, not security
    k = max(1, round(len(domain) * ratio))
    extra = [general[i % len(general)] for i in rng.sample(range(max(k, len(general))), k)]
    mixed = domain + extra
    rng.shuffle(mixed)
    return mixed


class _Encoder:
    """Tokenizes examples as the engines prompt them, labels on the answer (and its end token) only."""

    def __init__(self, processor: Any, config: FinetuneConfig, profile: ModelProfile) -> None:
        defaults = EngineDefaults.create(profile=profile, min_pixels=config.min_pixels, max_pixels=config.max_pixels)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.preparer = RequestPreparer(
            processor,
            processor.tokenizer,
            defaults=defaults,
            max_model_len=1 << 20,
            image_token_id=int(processor.image_token_id),
            video_token_id=int(processor.video_token_id),
            profile=profile,
        )
        # Every family's template closes an assistant turn with <|im_end|>: the answer is learnt up to it.
        self.end_ids = self.tokenizer.encode("<|im_end|>", add_special_tokens=False)

    def __call__(self, example: Example) -> dict[str, Any]:
        prep = self.preparer.prepare(ChatRequest(example.prompt))
        inputs = self.processor(
            text=[prep.prompt], images=prep.images or None, return_tensors="pt", **prep.mm_processor_kwargs
        )
        prompt_ids = inputs["input_ids"][0].tolist()
        answer_ids = self.tokenizer.encode(example.answer, add_special_tokens=False) + self.end_ids
        item: dict[str, Any] = {
            "input_ids": prompt_ids + answer_ids,
            "labels": [-100] * len(prompt_ids) + answer_ids,
        }
        if "mm_token_type_ids" in inputs:  # which tokens are image/video pads (for M-RoPE)
            item["mm_token_type_ids"] = inputs["mm_token_type_ids"][0].tolist() + [0] * len(answer_ids)
        if "pixel_values" in inputs:
            item["pixel_values"] = inputs["pixel_values"]
            item["image_grid_thw"] = inputs["image_grid_thw"]
        return item


def _collate(torch: Any, pad_id: int) -> Any:
    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        width = max(len(it["input_ids"]) for it in items)
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([it["input_ids"] + [pad_id] * (width - len(it["input_ids"])) for it in items]),
            "attention_mask": torch.tensor(
                [[1] * len(it["input_ids"]) + [0] * (width - len(it["input_ids"])) for it in items]
            ),
            "labels": torch.tensor([it["labels"] + [-100] * (width - len(it["labels"])) for it in items]),
        }
        if all("mm_token_type_ids" in it for it in items):
            batch["mm_token_type_ids"] = torch.tensor(
                [it["mm_token_type_ids"] + [0] * (width - len(it["mm_token_type_ids"])) for it in items]
            )
        with_images = [it for it in items if "pixel_values" in it]
        if with_images:
            batch["pixel_values"] = torch.cat([it["pixel_values"] for it in with_images])
            batch["image_grid_thw"] = torch.cat([it["image_grid_thw"] for it in with_images])
        return batch

    return collate


def finetune(
    model: str | os.PathLike[str],
    examples: Sequence[Example] | str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    general: Sequence[Example] | str | os.PathLike[str] | None = None,
    config: FinetuneConfig | None = None,
) -> FinetuneResult:
    """Trains a LoRA adapter of ``model`` on ``examples`` (a list or a JSONL path) and saves it in
    ``output_dir`` (PEFT format: adapter_config.json + adapter_model.safetensors)."""
    config = config or FinetuneConfig()
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    peft = require("peft", "train")
    require("accelerate", "train")
    domain = load_examples(examples) if isinstance(examples, str | os.PathLike) else list(examples)
    extra = load_examples(general) if isinstance(general, str | os.PathLike) else list(general or [])
    data = _mix(domain, extra, config.mix_ratio, config.seed)

    name = os.fspath(model)
    processor = transformers.AutoProcessor.from_pretrained(name)
    profile = load_profile(name)
    encode = _Encoder(processor, config, profile)
    dataset = [encode(e) for e in data]

    transformers.set_seed(config.seed)
    base = getattr(transformers, profile.transformers_class).from_pretrained(name, dtype=getattr(torch, config.dtype))
    targets: str | list[str] = config.target_modules
    if config.train_vision and isinstance(targets, str):
        targets = f"({targets})|({VISION_TARGETS})"
    lora = peft.LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    net = peft.get_peft_model(base, lora)
    if not config.train_vision:
        for pname, param in net.named_parameters():
            if "visual" in pname:
                param.requires_grad = False
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)

    out = Path(output_dir)
    args = transformers.TrainingArguments(
        output_dir=str(out / "trainer"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        learning_rate=config.learning_rate,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        lr_scheduler_type="linear",
        logging_steps=config.logging_steps,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    trainer = transformers.Trainer(
        model=net,
        args=args,
        train_dataset=dataset,
        data_collator=_collate(torch, int(processor.tokenizer.pad_token_id or 0)),
    )
    trainer.train()
    losses = [float(h["loss"]) for h in trainer.state.log_history if "loss" in h]
    net.save_pretrained(str(out))
    shutil.rmtree(out / "trainer", ignore_errors=True)
    _log.info("adapter saved in %s (loss %s -> %s)", out, losses[:1], losses[-1:])
    return FinetuneResult(out, losses, len(data), trainable)


def merge_adapter(
    model: str | os.PathLike[str],
    adapter: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    dtype: str = "float32",
) -> Path:
    """Merges ``adapter`` into the base weights and saves a full checkpoint (with the processor) that any
    engine loads without LoRA support."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    peft = require("peft", "train")
    model_class = getattr(transformers, load_profile(model).transformers_class)
    base = model_class.from_pretrained(os.fspath(model), dtype=getattr(torch, dtype))
    merged = peft.PeftModel.from_pretrained(base, os.fspath(adapter)).merge_and_unload()
    out = Path(output_dir)
    merged.save_pretrained(str(out))
    transformers.AutoProcessor.from_pretrained(os.fspath(model)).save_pretrained(str(out))
    return out
