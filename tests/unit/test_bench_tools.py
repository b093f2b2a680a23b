"""The benchmarks' shared tools: interleaved timing and the README table update of `bench/run_all.py --only`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))  # last: its module names shadow nothing

import run_all  # noqa: E402
from _common import interleaved  # noqa: E402

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
