"""VLLMEngine overhead against raw vLLM, per model family, and batching against a loop of single calls.

For each family, the same 32 image prompts (640x480, 256 visual tokens at most, 16 tokens out, greedy) run
through raw ``vllm.LLM.generate`` and through ``VLLMEngine.generate``, each contender in its own process so only
its own vLLM engine is alive (two engines on 2 cores slow each other: see ENVIRONMENT.md), in the order raw,
ours, raw; each process times ``--rounds`` calls after a warm-up and reports the median. Every timed call gets
new pictures (the call's number in a corner, `_common.marked`; the same sequence for both contenders), so no
cache of vLLM's answers from an earlier call. Prints
  - VLLMEngine.generate time / raw vllm.LLM.generate time   (goal <= 1.05; raw = mean of its two phases)
  - a loop of 32 single VLLMEngine.generate calls / one batched call
  - whether both gave the same greedy tokens

    python bench/engine_overhead.py                     # tiny random-weight Qwen2-VL on the CPU
    python bench/engine_overhead.py --family all        # tiny Qwen2-VL, Qwen2.5-VL and Qwen3-VL
    QWENVL_BENCH_MODEL=Qwen/Qwen2.5-VL-3B-Instruct python bench/engine_overhead.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DTYPE, images, marked  # noqa: E402

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
MAX_TOKENS_PER_IMAGE = 256  # visual tokens; pixels = 256 x the family's factor squared


def _model(family: str) -> str:
    if os.environ.get("QWENVL_BENCH_MODEL"):
        return os.environ["QWENVL_BENCH_MODEL"]
    from qwenvl.testing import tiny_model_path

    return str(tiny_model_path(family=family))


def _phase(contender: str, model: str, prompts: int, max_tokens: int, rounds: int) -> dict[str, Any]:
    """Time one contender in this process (the only vLLM engine alive here)."""
    from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text
    from qwenvl.models import load_profile

    profile = load_profile(model)
    max_pixels = MAX_TOKENS_PER_IMAGE * profile.factor**2
    originals = images(prompts)

    def pictures(call: int) -> list[Any]:
        """New pictures for a call (untimed): its number in a corner. Both contenders number their calls alike:
        1 the warm-up, then per round 2r+2 the batch and 2r+3 the loop (ours only)."""
        return [marked(p, call) for p in originals]

    def requests_of(pics: list[Any]) -> list[Any]:
        return [
            ChatRequest(
                [Message("user", [Image(p), Text(f"Describe picture {i}.")])], SamplingOptions(max_tokens=max_tokens)
            )
            for i, p in enumerate(pics)
        ]

    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Any, *args: Any) -> None:
        start = time.perf_counter()
        fn(*args)
        times.setdefault(name, []).append(time.perf_counter() - start)

    if contender == "raw":
        from transformers import AutoProcessor
        from vllm import LLM, SamplingParams
        from vllm.platforms import current_platform

        # Raw vLLM, as a user would call it: the chat template's prompt text and the original images, the
        # pixel limit per request.
        processor = AutoProcessor.from_pretrained(model)
        message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "{}"}]}]
        template = processor.apply_chat_template(message, tokenize=False, add_generation_prompt=True)
        size = {"shortest_edge": min(profile.min_pixels, max_pixels), "longest_edge": max_pixels}

        def raw_inputs(pics: list[Any]) -> list[Any]:
            return [
                {
                    "prompt": template.replace("{}", f"Describe picture {i}."),
                    "multi_modal_data": {"image": [p]},
                    "mm_processor_kwargs": {"images_kwargs": {"size": size}},
                }
                for i, p in enumerate(pics)
            ]

        # the engine settings VLLMEngine passes on the CPU (whole prefills: see VLLMEngine), so that the ratio
        # compares the work around the engine, not two schedulers
        chunked = {"enable_chunked_prefill": False} if current_platform.is_cpu() else {}
        llm = LLM(
            model,
            dtype=DTYPE,
            max_model_len=4096,
            gpu_memory_utilization=0.2,
            limit_mm_per_prompt={"image": 1},
            **chunked,
        )
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        outputs = llm.generate(raw_inputs(pictures(1)), params, use_tqdm=False)  # warm-up: compile
        for r in range(rounds):
            timed("batch", lambda batch: llm.generate(batch, params, use_tqdm=False), raw_inputs(pictures(2 * r + 2)))
        tokens = [list(o.outputs[0].token_ids) for o in outputs[:4]]
    else:
        from qwenvl import VLLMEngine

        engine = VLLMEngine(
            model,
            dtype=DTYPE,
            max_model_len=4096,
            gpu_memory_utilization=0.2,
            limit_images=1,
            max_pixels=max_pixels,
        )
        results = engine.generate(requests_of(pictures(1)))  # warm-up
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:2]
        for r in range(rounds):
            timed("batch", engine.generate, requests_of(pictures(2 * r + 2)))
            timed("loop", lambda batch: [engine.generate([q]) for q in batch], requests_of(pictures(2 * r + 3)))
        tokens = [r.token_ids for r in results[:4]]
        engine.close()
    return {"contender": contender, "times": {k: statistics.median(v) for k, v in times.items()}, "tokens": tokens}


def _run_phase(contender: str, model: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable, __file__, "--phase", contender, "--model", model,
        "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens), "--rounds", str(args.rounds),
    ]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=1800)  # noqa: S603
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("PHASE ")][-1]
    return json.loads(line.removeprefix("PHASE "))  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    """Run the benchmark and print the ratios (one row per family for the README table)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=[*FAMILIES, "all"], default="qwen2_vl")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--phase", choices=["raw", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        result = _phase(args.phase, args.model, args.prompts, args.max_tokens, args.rounds)
        print("PHASE " + json.dumps(result), flush=True)
        return []

    rows = []
    families = FAMILIES if args.family == "all" else (args.family,)
    for family in families:
        model = _model(family)
        raw1 = _run_phase("raw", model, args)
        ours = _run_phase("ours", model, args)
        raw2 = _run_phase("raw", model, args)
        raw = (raw1["times"]["batch"] + raw2["times"]["batch"]) / 2
        batch, loop = ours["times"]["batch"], ours["times"]["loop"]
        same = raw1["tokens"] == ours["tokens"]
        print(f"== {family}: {model}")
        print(f"{args.prompts} image prompts, {args.max_tokens} tokens out, median of {args.rounds} rounds per phase")
        print(
            f"raw vllm.LLM.generate          {raw:.3f} s  (phases {raw1['times']['batch']:.3f} / "
            f"{raw2['times']['batch']:.3f} s)"
        )
        print(f"VLLMEngine.generate (batch)    {batch:.3f} s  ({args.prompts / batch:.1f} prompts/s)")
        print(f"loop of single generate calls  {loop:.3f} s")
        print(f"VLLMEngine / raw LLM.generate  {batch / raw:.3f}  (goal <= 1.05)")
        print(f"loop of singles / one batch    {loop / batch:.2f}x")
        print(f"same greedy tokens as raw vLLM on 4 prompts: {same}", flush=True)
        rows.append(
            (
                f"`VLLMEngine.generate` ÷ raw `vllm.LLM.generate`, {args.prompts} image prompts, {family}",
                f"{batch / raw:.2f} (time)",
            )
        )
        if family == families[0]:
            rows.append(
                (f"loop of {args.prompts} single `generate` calls ÷ one batched call", f"{loop / batch:.1f}x slower")
            )
    return rows


if __name__ == "__main__":
    main()
