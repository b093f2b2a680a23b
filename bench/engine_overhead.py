"""VLLMEngine overhead against raw vLLM, and batching against a loop of single calls.

Prints, from one run on the same 32 image prompts (640x480, max_pixels 256*28*28, 16 tokens out, greedy):
  - VLLMEngine.generate time / raw vllm.LLM.generate time   (goal <= 1.05)
  - a loop of 32 single VLLMEngine.generate calls / one batched call

    python bench/engine_overhead.py            # tiny random-weight model on the CPU
    QWENVL_BENCH_MODEL=Qwen/Qwen2-VL-2B-Instruct python bench/engine_overhead.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import images, interleaved, model_path  # noqa: E402

MAX_PIXELS = 256 * 28 * 28


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    """Run the benchmark and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS)
    args = parser.parse_args(argv)

    from vllm import LLM, SamplingParams

    from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text, VLLMEngine

    model = model_path()
    common = {"max_model_len": 4096, "gpu_memory_utilization": 0.2, "limit_mm_per_prompt": {"image": 1}}
    pics = images(args.prompts)
    requests = [
        ChatRequest(
            [Message("user", [Image(p), Text(f"Describe picture {i}.")])], SamplingOptions(max_tokens=args.max_tokens)
        )
        for i, p in enumerate(pics)
    ]

    max_pixels = args.max_pixels
    engine = VLLMEngine(model, max_model_len=4096, gpu_memory_utilization=0.2, limit_images=1, max_pixels=max_pixels)
    # Raw vLLM, as a user would call it: the same prompt text and original images, pixel limit per request.
    prompts = [engine._preparer.prepare(r).prompt for r in requests]
    raw_inputs = [
        {"prompt": text, "multi_modal_data": {"image": [p]}, "mm_processor_kwargs": {"max_pixels": max_pixels}}
        for text, p in zip(prompts, pics, strict=True)
    ]
    llm = LLM(model, **common)
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.0)

    def raw() -> None:
        llm.generate(raw_inputs, params, use_tqdm=False)

    def ours() -> None:
        results = engine.generate(requests)
        assert all(r.ok for r in results)

    def loop() -> None:
        for r in requests:
            engine.generate([r])

    raw()
    ours()  # warm-up: compile, caches
    t = interleaved({"raw": raw, "ours": ours, "loop": loop}, rounds=args.rounds)
    check = llm.generate(raw_inputs[:4], params, use_tqdm=False)
    same = [list(o.outputs[0].token_ids) for o in check] == [r.token_ids for r in engine.generate(requests[:4])]
    print(f"model: {model}")
    print(
        f"{args.prompts} image prompts (max_pixels {max_pixels}), {args.max_tokens} tokens out, "
        f"median of {args.rounds} interleaved rounds"
    )
    print(f"raw vllm.LLM.generate          {t['raw']:.3f} s  ({args.prompts / t['raw']:.1f} prompts/s)")
    print(f"VLLMEngine.generate (batch)    {t['ours']:.3f} s  ({args.prompts / t['ours']:.1f} prompts/s)")
    print(f"loop of single generate calls  {t['loop']:.3f} s  ({args.prompts / t['loop']:.1f} prompts/s)")
    print(f"VLLMEngine / raw LLM.generate  {t['ours'] / t['raw']:.3f}  (goal <= 1.05)")
    print(f"loop of singles / one batch    {t['loop'] / t['ours']:.2f}x")
    print(f"same greedy tokens as raw vLLM on 4 prompts: {same}")
    engine.close()
    return [
        (
            f"`VLLMEngine.generate` ÷ raw `vllm.LLM.generate`, {args.prompts} image prompts",
            f"{t['ours'] / t['raw']:.2f} (time)",
        ),
        (f"loop of {args.prompts} single `generate` calls ÷ one batched call", f"{t['loop'] / t['ours']:.1f}x slower"),
    ]


if __name__ == "__main__":
    main()
