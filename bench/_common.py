"""Shared pieces of the benchmarks: the tiny model, test images, timing."""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image as PILImage

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

#: every vLLM engine of the benchmarks runs in float32, as the tests' engines and `VLLMServerProcess` do: vLLM's
#: "auto" is bfloat16 on the CPU, which is emulated where the CPU has no bfloat16 instructions (measured on an
#: AVX2-only machine: 150 ms against 61 ms per new 640x480 image), and a ratio between two engines must not
#: compare two dtypes
DTYPE = "float32"


def model_path() -> str:
    """The model to benchmark: $QWENVL_BENCH_MODEL, or the tiny random-weight Qwen2-VL (built once)."""
    if os.environ.get("QWENVL_BENCH_MODEL"):
        return os.environ["QWENVL_BENCH_MODEL"]
    from qwenvl.testing import tiny_model_path

    return str(tiny_model_path())


def images(n: int, size: tuple[int, int] = (640, 480)) -> list[PILImage.Image]:
    """``n`` distinct RGB images."""
    out = []
    for i in range(n):
        img = PILImage.new("RGB", size, ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256))
        img.paste((255 - i % 256, 20, 90), (i % 100, i % 80, i % 100 + 200, i % 80 + 150))
        out.append(img)
    return out


def marked(picture: PILImage.Image, run: int) -> PILImage.Image:
    """A copy of ``picture`` with ``run`` written into its top-left corner, one black or white 8x8 block per bit
    (12 bits). A benchmark marks its inputs with the run's number so that no cache of vLLM's (prefix, multimodal
    processor) answers from an earlier run: an archive's pages are each seen once. Flat, aligned blocks survive
    JPEG, so the decoded pixels and a saved file's bytes differ from every other run's."""
    changed = picture.copy()
    for bit in range(12):
        changed.paste((255, 255, 255) if run >> bit & 1 else (0, 0, 0), (8 * bit, 0, 8 * bit + 8, 8))
    return changed


def timed(fn: Callable[[], Any], repeats: int = 3) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs (after the caller's warm-up)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(
    fns: dict[str, Callable[[], Any]],
    rounds: int = 3,
    before: Callable[[str], Any] | None = None,
    cpu: dict[str, float] | None = None,
    runs: dict[str, list[float]] | None = None,
) -> dict[str, float]:
    """Median time of each function, run in alternation so machine noise hits them alike; every other round
    runs them in reverse order, so that none always runs right after the same other one (a heavy workload can
    leave the machine slower for the next). ``before(name)``, untimed, runs ahead of each timed run (to make
    its inputs new). ``cpu``, when given, receives each function's median CPU time in this process (all its
    threads, not its child processes: a client's own cost, without the server's). ``runs``, when given,
    receives each function's times, round by round (for `paired_ratio`)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    cpu_times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name in list(fns)[:: -1 if r % 2 else 1]:
            fn = fns[name]
            if before is not None:
                before(name)
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - start_cpu)
    if cpu is not None:
        cpu.update({name: statistics.median(ts) for name, ts in cpu_times.items()})
    if runs is not None:
        runs.update(times)
    return {name: statistics.median(ts) for name, ts in times.items()}


def paired_ratio(
    slower: Sequence[float], faster: Sequence[float], *, level: float = 0.95, resamples: int = 10_000
) -> tuple[float, float, float]:
    """How many times faster the second contender is, from the rounds of `interleaved` (``slower[i]`` and
    ``faster[i]`` ran side by side in round i): the geometric mean of the rounds' ratios, and the bounds of its
    ``level`` confidence interval (percentile bootstrap over the rounds, seeded: the same times give the same
    interval). Pairing takes out what a round's machine noise does to both; the interval says how far the
    remaining noise leaves the ratio uncertain."""
    if len(slower) != len(faster) or len(slower) < 2:
        raise ValueError(
            f"paired_ratio needs two equal series of 2 or more rounds, got {len(slower)} and {len(faster)}"
        )
    logs = [math.log(a / b) for a, b in zip(slower, faster, strict=True)]
    rng = random.Random(0)
    means = sorted(statistics.fmean(rng.choices(logs, k=len(logs))) for _ in range(resamples))
    tail = (1 - level) / 2
    low, high = means[int(tail * resamples)], means[min(resamples - 1, int((1 - tail) * resamples))]
    return math.exp(statistics.fmean(logs)), math.exp(low), math.exp(high)


__all__ = ["DTYPE", "Path", "images", "interleaved", "marked", "model_path", "paired_ratio", "timed"]
