"""The `qwenvl` command from a shell: parse on the CPU with no model, ask and chat on the tiny model."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage

SAMPLE = Path(__file__).parents[2] / "cookbook" / "data" / "sample-scan.pdf"
QWENVL = shutil.which("qwenvl", path=str(Path(sys.executable).parent)) or "qwenvl"
TINY_ARGS = ["--max-model-len", "4096", "--dtype", "float32", "--gpu-memory-utilization", "0.2", "--enforce-eager"]


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("QWENVL_MODEL", None)
    return subprocess.run([QWENVL, *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_help_explains_the_commands() -> None:
    out = run("--help")
    assert out.returncode == 0 and "qwenvl parse" in out.stdout and "qwenvl ask" in out.stdout
    for command in ("parse", "ask", "chat"):
        assert run(command, "--help").returncode == 0


def test_parse_sample_scan_on_the_cpu(tmp_path: Path) -> None:
    out = run("parse", str(SAMPLE), "--backend", "ocr", "--out", str(tmp_path), "--no-cache")
    assert out.returncode == 0, out.stderr
    assert "pages: 3 (ok 3, fallback 0, failed 0)" in out.stdout
    records = [json.loads(line) for line in (tmp_path / "sample-scan.jsonl").read_text().splitlines()]
    assert {r["page"] for r in records} == {1, 2, 3}
    assert {"title", "paragraph", "table"} <= {r["block_type"] for r in records}
    assert all(
        0 <= r["x0"] < r["x1"] <= r["page_width"] and 0 <= r["y0"] < r["y1"] <= r["page_height"] for r in records
    )
    assert "| Item | Quantity | Price | Total |" in (tmp_path / "sample-scan.md").read_text()
    drawn = sorted((tmp_path / "sample-scan").glob("page-*.png"))
    assert len(drawn) == 3 and PILImage.open(drawn[0]).size == (1700, 2200)


def test_parse_reports_unreadable_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(b"%PDF-1.4 broken")
    out = run("parse", str(bad), "--backend", "ocr", "--out", str(tmp_path / "out"), "--no-cache")
    assert out.returncode == 1 and "bad.pdf" in out.stderr and "documents not readable: 1" in out.stdout


@pytest.mark.engine
def test_ask_answers_with_citations_and_a_highlight_image(tiny_model: Path, tmp_path: Path) -> None:
    out = run(
        "ask",
        str(SAMPLE),
        "What is the total of the Results row?",
        "--model",
        str(tiny_model),
        "--backend",
        "ocr",
        "--out",
        str(tmp_path),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--max-tokens",
        "24",
        *TINY_ARGS,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    after = out.stdout.split("Sources:")[1].splitlines()
    sources = [line for line in after if re.match(r"^[* ] \[\d\] ", line)]  # vLLM logs to stdout too
    assert len(sources) == 4 and "[1]" in sources[0] and "p.2" in sources[0] and "table" in sources[0]
    image = PILImage.open(tmp_path / "answer-citations.png")
    assert image.height == 1400 and image.width > 900


@pytest.mark.engine
def test_chat_streams_an_answer_from_a_server(vllm_server: Any, tiny_model: Path, tmp_path: Path) -> None:
    # the session's server (the in-process engine of the command is the one `ask` starts above)
    path = tmp_path / "photo.png"
    PILImage.new("RGB", (320, 240), (30, 120, 200)).save(path)
    question = ["chat", str(path), "What is in this image?", "--model", str(tiny_model), "--max-tokens", "8"]
    out = run(*question, "--base-url", vllm_server.base_url)
    assert out.returncode == 0, out.stderr[-3000:]
    usage = re.search(r"\[\d+ prompt tokens \([1-9]\d* image\), (\d+) generated\]", out.stderr)
    assert usage is not None and 1 <= int(usage.group(1)) <= 8, out.stderr[-2000:]


def test_finetune_command_saves_an_adapter_and_a_merged_checkpoint(tiny_model: Path, tmp_path: Path) -> None:
    PILImage.new("RGB", (56, 56), (200, 10, 10)).save(tmp_path / "a.png")
    line = {
        "messages": [
            {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "Colour?"}]},
            {"role": "assistant", "content": "red"},
        ]
    }
    (tmp_path / "train.jsonl").write_text(json.dumps(line) + "\n")
    out = run(
        "finetune",
        str(tmp_path / "train.jsonl"),
        "--model",
        str(tiny_model),
        "--out",
        str(tmp_path / "ad"),
        "--epochs",
        "2",
        "--rank",
        "4",
        "--lr",
        "1e-3",
        "--merge-to",
        str(tmp_path / "merged"),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "adapter saved in" in out.stdout and "loss" in out.stdout
    assert (tmp_path / "ad" / "adapter_config.json").is_file()
    assert json.loads((tmp_path / "ad" / "adapter_config.json").read_text())["r"] == 4
    assert (tmp_path / "merged" / "config.json").is_file() and list((tmp_path / "merged").glob("*.safetensors"))
