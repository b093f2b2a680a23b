"""Soak: many requests through `VLLMEngine.astream` with random cancellations and bad requests mixed in.

Checks that the engine stays healthy (no unfinished requests left, a normal request answered at the end,
every failure a typed qwenvl error) and that memory stays flat after warm-up. Prints the outcome counts and
the resident memory (this process plus vLLM's engine processes) after warm-up and after each quarter.

    python bench/soak.py                      # 100 requests, 5% bad, about 30% cancelled
    python bench/soak.py --requests 400 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DTYPE, images, model_path  # noqa: E402


def rss_mib() -> float:
    """Resident memory of this process and its children (vLLM's engine processes), in MiB."""
    import psutil

    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def build_requests(n: int, bad_share: float, rng: random.Random) -> list[Any]:
    from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text

    pics = images(16, (320, 240))
    bad_makers = [
        lambda: ChatRequest([Message("user", [Image(b"\x89PNG broken"), Text("x")])]),
        lambda: ChatRequest([Message("user", [Image("http://127.0.0.1:9/x.png"), Text("x")])]),
        lambda: ChatRequest([Message("user", "word " * 6000)]),
        lambda: ChatRequest([Message("user", "x")], tool_choice="required"),
        lambda: ChatRequest([Message("user", "x")], response_format={"type": "bogus"}),
    ]
    out = []
    for i in range(n):
        if rng.random() < bad_share:
            out.append(("bad", rng.choice(bad_makers)()))
            continue
        image = Image(pics[i % len(pics)], max_pixels=rng.choice([64, 128, 256]) * 28 * 28)
        options = SamplingOptions(max_tokens=rng.randint(8, 160), temperature=rng.choice([0.0, 0.8]), seed=i)
        out.append(("good", ChatRequest([Message("user", [image, Text(f"describe {i}")])], options)))
    return out


async def run_one(engine: Any, kind: str, request: Any, rng: random.Random, cancel_share: float) -> str:
    from qwenvl.errors import QwenVLError

    async def consume() -> int:
        count = 0
        async for chunk in engine.astream(request):
            count += 1
            if chunk.error is not None:
                raise chunk.error
        return count

    cancel = kind == "good" and rng.random() < cancel_share
    task = asyncio.create_task(consume())
    try:
        if cancel:
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            task.cancel()
        await task
        return "completed"
    except asyncio.CancelledError:
        return "cancelled"
    except QwenVLError as exc:
        return f"typed error: {type(exc).__name__}"
    except Exception as exc:  # noqa: BLE001 - counted: must stay zero
        return f"UNTYPED {type(exc).__name__}: {exc}"


async def run_all(engine: Any, requests: list[Any], concurrency: int, rng: random.Random, cancel: float) -> Counter:
    outcomes: Counter = Counter()
    queue: asyncio.Queue = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            kind, request = queue.get_nowait()
            outcomes[await run_one(engine, kind, request, rng, cancel)] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    """Run the soak and print its figures; returns (label, value) rows."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--bad", type=float, default=0.05, help="share of bad requests (default 0.05)")
    parser.add_argument("--cancel", type=float, default=0.3, help="share of good requests cancelled (default 0.3)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text, VLLMEngine

    rng = random.Random(args.seed)
    engine = VLLMEngine(model_path(), max_model_len=4096, gpu_memory_utilization=0.2, dtype=DTYPE)
    rows: list[tuple[str, str]] = []
    try:
        warm = build_requests(args.warmup, args.bad, rng)
        asyncio.run(run_all(engine, warm, args.concurrency, rng, args.cancel))
        gc.collect()
        base = rss_mib()
        samples = [base]
        outcomes: Counter = Counter()
        start = time.perf_counter()
        quarter = max(1, args.requests // 4)
        done = 0
        while done < args.requests:
            part = build_requests(min(quarter, args.requests - done), args.bad, rng)
            outcomes.update(asyncio.run(run_all(engine, part, args.concurrency, rng, args.cancel)))
            done += len(part)
            gc.collect()
            samples.append(rss_mib())
        elapsed = time.perf_counter() - start
        unfinished = engine.unfinished_requests()
        pics = images(1, (320, 240))
        check = ChatRequest([Message("user", [Image(pics[0]), Text("still there?")])], SamplingOptions(max_tokens=8))
        [final] = engine.generate([check])
        growth = (max(samples) - base) / base * 100
        untyped = sum(v for k, v in outcomes.items() if k.startswith("UNTYPED"))
        rows = [
            ("requests", f"{done} in {elapsed:.1f} s ({done / elapsed:.1f}/s), concurrency {args.concurrency}"),
            *[(f"  {k}", str(v)) for k, v in sorted(outcomes.items())],
            ("untyped errors", str(untyped)),
            ("unfinished requests after the soak", str(unfinished)),
            ("engine healthy; a normal request answered", f"{engine.healthy}; {final.ok}"),
            ("RSS after warm-up (MiB)", f"{base:.0f}"),
            ("RSS per quarter (MiB)", ", ".join(f"{s:.0f}" for s in samples[1:])),
            ("largest growth over warm-up", f"{growth:+.1f}% (goal within 10%)"),
        ]
    finally:
        engine.close()
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return rows


if __name__ == "__main__":
    main()
