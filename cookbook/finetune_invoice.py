"""Fine-tune a domain adapter (invoice images -> JSON) and serve it per request next to the base model.

    python cookbook/finetune_invoice.py --model Qwen/Qwen2.5-VL-3B-Instruct [--examples 64] [--epochs 3]

1. Writes a JSONL training set: synthetic invoice images with their JSON in the exact output format wanted.
2. `qwenvl.finetune.finetune`: LoRA on the language model (vision frozen), loss on the JSON only.
3. Serves base and adapter from one `VLLMEngine(enable_lora=True)`: one batch, each request with its adapter.
Same from the shell: `qwenvl finetune train.jsonl --out adapter/ --model ...`.

With the tiny test model (`--model` a folder from `python -m qwenvl.testing`), the defaults here are the ones
that make it memorize 8 examples; a real model wants more examples, fewer epochs and a lower learning rate.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from qwenvl import ChatRequest, SamplingOptions, VLLMEngine
from qwenvl.finetune import FinetuneConfig, finetune, load_examples
from qwenvl_testkit.synthetic_pages import find_font

PROMPT = "Extract this invoice as JSON."


def invoice(i: int) -> tuple[PIL.Image.Image, str]:
    """A small invoice image and its JSON."""
    vendor = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne"][i % 8]
    total = round(12.5 * (i + 1) + i % 3, 2)
    image = PIL.Image.new("RGB", (224, 224), (255, 255, 250))
    draw = PIL.ImageDraw.Draw(image)
    # a letterhead band in the vendor's colour, as real invoices have (it also tells a random test model apart)
    draw.rectangle((0, 0, 224, 50), fill=((i * 97) % 256, (i * 53) % 256, (i * 29) % 256))
    draw.rectangle((150 + 8 * (i % 8), 60, 170 + 8 * (i % 8), 140), fill=(40 * (i % 6), 120, 200 - 20 * (i % 9)))
    font = PIL.ImageFont.truetype(find_font("sans-bold"), 22)
    draw.text((12, 14), vendor, fill="white", font=font)
    draw.text((12, 90), f"No. {1000 + i}", fill="black", font=font)
    draw.text((12, 160), f"Total {total:.2f}", fill=(160, 20, 20), font=font)
    return image, json.dumps({"vendor": vendor, "number": 1000 + i, "total": total})


def write_dataset(folder: Path, n: int) -> Path:
    """Images and a train.jsonl in the qwenvl dataset format."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        image, answer = invoice(i)
        image.save(folder / f"invoice-{i:03d}.png")
        lines.append(
            json.dumps(
                {
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "image", "image": f"invoice-{i:03d}.png", "max_pixels": 64 * 28 * 28},
                                {"type": "text", "text": PROMPT},
                            ],
                        },
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
        )
    path = folder / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.environ.get("QWENVL_MODEL", "Qwen/Qwen2.5-VL-3B-Instruct"))
    ap.add_argument("--work", default="finetune-invoice", help="folder for the data and the adapter")
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--epochs", type=float, default=200)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--enforce-eager", action="store_true", help="serve without torch.compile (a faster start)")
    args = ap.parse_args(argv)
    work = Path(args.work)
    data = write_dataset(work / "data", args.examples)
    config = FinetuneConfig(
        rank=args.rank,
        alpha=2 * args.rank,
        learning_rate=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        dtype=args.dtype,
    )
    result = finetune(args.model, data, work / "adapter", config=config)
    print(f"loss {result.losses[0]:.3f} -> {result.losses[-1]:.5f} over {len(result.losses)} steps")
    examples = load_examples(data)
    with VLLMEngine(
        args.model,
        enable_lora=True,
        max_lora_rank=args.rank,
        max_model_len=4096,
        dtype=args.dtype,
        gpu_memory_utilization=float(os.environ.get("QWENVL_GPU_MEMORY", "0.5")),
        engine_kwargs={"enforce_eager": True} if args.enforce_eager else None,
    ) as engine:
        requests = []
        for e in examples:  # base and adapter requests in ONE batch
            requests.append(ChatRequest(e.prompt, SamplingOptions(max_tokens=64)))
            requests.append(ChatRequest(e.prompt, SamplingOptions(max_tokens=64), lora=str(result.adapter_path)))
        results = engine.generate(requests)
    base = sum(r.text == e.answer for r, e in zip(results[0::2], examples, strict=True))
    tuned = sum(r.text == e.answer for r, e in zip(results[1::2], examples, strict=True))
    print(f"exact JSON: base model {base}/{len(examples)}, with the adapter {tuned}/{len(examples)}")
    print("first answer with the adapter:", results[1].text)
    return {
        "base": base,
        "tuned": tuned,
        "n": len(examples),
        "losses": result.losses,
        "adapter": str(result.adapter_path),
    }


if __name__ == "__main__":
    main()
