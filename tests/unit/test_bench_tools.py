"""The benchmarks' shared tools: interleaved timing and the README table update of `bench/run_all.py --only`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))  # last: its module names shadow nothing

import run_all  # noqa: E402
from _common import interleaved, paired_ratio  # noqa: E402

README = """intro
<!-- bench:engine:start -->
Measured on a machine (`python bench/run_all.py`):

| benchmark | result |
| --- | --- |
| first | 1.00x |
| second | 2.00x |
<!-- bench:engine:end -->
after
"""


def test_merge_rows_replaces_rows_by_name_and_keeps_the_others() -> None:
    out = run_all._merge_rows(README, [("second", "2.50x"), ("third", "3.00x")])
    table = out.split("<!-- bench:engine:start -->\n")[1].split("<!-- bench:engine:end -->")[0]
    assert table.splitlines() == [
        "Measured on a machine (`python bench/run_all.py`):",
        "",
        "| benchmark | result |",
        "| --- | --- |",
        "| first | 1.00x |",
        "| second | 2.50x |",
        "| third | 3.00x |",
    ]
    assert out.startswith("intro\n") and out.endswith("after\n")


def test_merge_rows_needs_the_markers() -> None:
    with pytest.raises(SystemExit, match="markers"):
        run_all._merge_rows("no table here", [("first", "1x")])


def test_interleaved_reports_cpu_time_of_this_process_only() -> None:
    def spin() -> None:
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass

    cpu: dict[str, float] = {}
    times = interleaved({"spin": spin, "sleep": lambda: time.sleep(0.05)}, rounds=3, cpu=cpu)
    assert set(times) == set(cpu) == {"spin", "sleep"}
    assert cpu["spin"] >= 0.05  # busy: its CPU time is its wall time
    assert cpu["sleep"] < 0.03 and times["sleep"] >= 0.05  # waiting costs no CPU


def test_interleaved_hands_out_each_round() -> None:
    runs: dict[str, list[float]] = {}
    times = interleaved({"a": lambda: time.sleep(0.01), "b": lambda: None}, rounds=3, runs=runs)
    assert set(runs) == {"a", "b"} and all(len(ts) == 3 for ts in runs.values())
    assert min(runs["a"]) >= 0.01 and times["a"] in runs["a"]


def test_paired_ratio_is_the_rounds_ratio_with_an_interval_that_covers_the_noise() -> None:
    import random

    # the same ratio every round: no doubt left, whatever each round's own speed
    assert paired_ratio([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]) == pytest.approx((2.0, 2.0, 2.0))
    # a real gain of 1.05x under round noise of 10%: the interval holds 1.05x, and is as wide as the noise says
    rng = random.Random(1)
    faster = [rng.uniform(3.5, 5.0) for _ in range(21)]
    slower = [f * 1.05 * rng.uniform(0.9, 1.1) for f in faster]
    gain, low, high = paired_ratio(slower, faster)
    assert low < 1.05 < high and low < gain < high
    assert 0.02 < high - low < 0.15
    assert paired_ratio(slower, faster) == (gain, low, high)  # seeded: the same times give the same interval
    with pytest.raises(ValueError, match="2 or more rounds"):
        paired_ratio([1.0], [1.0])
