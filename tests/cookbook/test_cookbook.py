"""Every cookbook script runs on the tiny model (its words are noise; its mechanics are checked), sharing the
session's engine; the Ray recipe, which needs Ray and GPUs, says so and exits."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

COOKBOOK = Path(__file__).parents[2] / "cookbook"


def load(name: str) -> ModuleType:
    if str(COOKBOOK) not in sys.path:
        sys.path.insert(0, str(COOKBOOK))
    return importlib.import_module(name)


@pytest.mark.engine
def test_invoice_to_json(vllm_engine: Any) -> None:
    module = load("invoice_to_json")
    invoice = module.main([], engine=vllm_engine)
    assert isinstance(invoice, module.Invoice) and len(invoice.currency) == 3


@pytest.mark.engine
def test_chart_qa(vllm_engine: Any, tmp_path: Path) -> None:
    out = load("chart_qa").main(
        ["--out", str(tmp_path / "boxes.png"), "--max-pixels", str(512 * 28 * 28)], engine=vllm_engine
    )
    assert out["usage"].image_tokens > 0 and (tmp_path / "boxes.png").is_file()
    assert all(0 <= b.x1 <= 800 and 0 <= b.y1 <= 500 for b in out["boxes"])


@pytest.mark.engine
def test_screenshot_diff(vllm_engine: Any) -> None:
    assert isinstance(load("screenshot_diff").main([], engine=vllm_engine), str)


@pytest.mark.engine
def test_video_summary(vllm_engine: Any) -> None:
    out = load("video_summary").main([], engine=vllm_engine)
    assert out["video_tokens"] > 0 and isinstance(out["text"], str)


@pytest.mark.engine
def test_rag_langchain_cites_pages_and_boxes(vllm_engine: Any) -> None:
    out = load("rag_langchain").main([], engine=vllm_engine)
    assert len(out["sources"]) == 3
    top = out["sources"][0]
    assert top["page"] == 2 and top["block_type"] == "table"  # the question asks about a table row
    assert 0 <= top["x0"] < top["x1"] <= top["page_width"]


@pytest.mark.engine
def test_rag_llamaindex_cites_pages_and_boxes(vllm_engine: Any) -> None:
    out = load("rag_llamaindex").main([], engine=vllm_engine)
    assert out["sources"] and out["sources"][0]["page"] == 2 and out["sources"][0]["block_type"] == "table"
    assert isinstance(out["answer"], str)


@pytest.mark.engine
def test_agent_looks_at_a_region(vllm_engine: Any) -> None:
    out = load("agent_look_at_region").main([], engine=vllm_engine)
    assert out["looked"]  # the forced first step called the tool, which cropped a page and asked the model
    assert 1 <= out["looked"][0]["page"]


def test_ray_recipe_runs_on_a_local_cluster(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the Ray recipe needs qwenvl[ray] (scripts/install.sh installs it)")
    (tmp_path / "docs").mkdir()
    for name in ("first", "second"):
        (tmp_path / "docs" / f"{name}.pdf").write_bytes((COOKBOOK / "data" / "sample-scan.pdf").read_bytes())
    (tmp_path / "docs" / "broken.pdf").write_bytes(b"%PDF-1.7 truncated")
    run = subprocess.run(
        [sys.executable, str(COOKBOOK / "ray_data_ingest.py"), str(tmp_path / "docs"), "--out", str(tmp_path / "pq")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = ast.literal_eval(run.stdout.strip().splitlines()[-1])
    assert (
        summary["statuses"] == {"ok": 6}
        and summary["pages"] == 6
        and summary["lost"] == 0
        and summary["duplicates"] == 0
    )
    assert summary["failed_documents"] == [str(tmp_path / "docs" / "broken.pdf")]
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == ["first.parquet", "second.parquet"]
    assert summary["blocks"]["paragraph"] > 0 and sum(summary["blocks"].values()) > 6


@pytest.mark.engine
def test_finetune_invoice_recipe(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWENVL_GPU_MEMORY", "0.2")
    out = load("finetune_invoice").main(["--model", str(tiny_model), "--work", str(tmp_path), "--enforce-eager"])
    assert out["base"] == 0 and out["tuned"] >= 7 and out["losses"][-1] < out["losses"][0] / 100
