"""ChatQwenVL.batch against the engine it runs on, and against a loop of invoke.

Prints, from one run on the same 32 image prompts (640x480, max_pixels 256*28*28, 16 tokens out, greedy):
  - ChatQwenVL.batch time / VLLMEngine.generate time   (goal <= 1.1)
  - a loop of ChatQwenVL.invoke / ChatQwenVL.batch
Every timed run gets new pictures (the run's number in a corner, `_common.marked`), so no cache of vLLM's
answers from an earlier run.

    python bench/langchain_batch.py
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DTYPE, images, interleaved, marked, model_path  # noqa: E402

MAX_PIXELS = 256 * 28 * 28


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    """Run the benchmark and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from langchain_core.messages import HumanMessage

    from langchain_qwenvl import ChatQwenVL
    from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text, VLLMEngine

    pics = images(args.prompts)
    engine = VLLMEngine(
        model_path(), dtype=DTYPE, max_model_len=4096, gpu_memory_utilization=0.2, max_pixels=MAX_PIXELS
    )
    chat = ChatQwenVL(engine=engine, max_tokens=args.max_tokens)
    runs = 0
    requests: list[Any] = []
    inputs: list[Any] = []

    def renew(_name: str = "") -> None:
        """New pictures for the next run (untimed), as PNG data URIs. The same inputs for both: the engine gets
        the URIs, as the chat model does after conversion."""
        nonlocal runs, requests, inputs
        runs += 1
        uris = []
        for p in pics:
            buf = io.BytesIO()
            marked(p, runs).save(buf, format="PNG", compress_level=1)
            uris.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode())
        requests = [
            ChatRequest(
                [Message("user", [Image(u), Text(f"Describe picture {i}.")])],
                SamplingOptions(max_tokens=args.max_tokens),
            )
            for i, u in enumerate(uris)
        ]
        inputs = [
            [HumanMessage(content=[{"type": "image_url", "image_url": {"url": u}}, f"Describe picture {i}."])]
            for i, u in enumerate(uris)
        ]

    def raw() -> None:
        assert all(r.ok for r in engine.generate(requests))

    def batch() -> None:
        chat.batch(inputs)

    def loop() -> None:
        for item in inputs:
            chat.invoke(item)

    renew()
    raw()  # warm-up
    renew()
    batch()
    t = interleaved({"raw": raw, "batch": batch, "loop": loop}, rounds=args.rounds, before=renew)
    n = args.prompts
    print(f"{n} image prompts (640x480, max_pixels {MAX_PIXELS}), {args.max_tokens} tokens out, {args.rounds} rounds")
    print(f"VLLMEngine.generate        {t['raw']:.3f} s  {n / t['raw']:.1f} prompts/s")
    print(f"ChatQwenVL.batch           {t['batch']:.3f} s  {n / t['batch']:.1f} prompts/s")
    print(f"loop of ChatQwenVL.invoke  {t['loop']:.3f} s  {n / t['loop']:.1f} prompts/s")
    print(f"batch / raw engine         {t['batch'] / t['raw']:.3f}  (goal <= 1.1)")
    print(f"loop of invoke / batch     {t['loop'] / t['batch']:.2f}x")
    engine.close()
    return [
        (f"`ChatQwenVL.batch` ÷ `VLLMEngine.generate`, {n} image prompts", f"{t['batch'] / t['raw']:.2f} (time)"),
        ("loop of `ChatQwenVL.invoke` ÷ `ChatQwenVL.batch`", f"{t['loop'] / t['batch']:.1f}x slower"),
    ]


if __name__ == "__main__":
    main()
