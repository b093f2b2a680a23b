"""The loader and the command line under bad input: huge pages, unusable caches, tampered cache entries,
empty PDFs, globs that match nothing, models that cannot load, servers that are not vLLM."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qwenvl.engine.base import cpu_memory_share
from qwenvl.layout import DocumentParser
from qwenvl.layout.pages import MAX_RENDER_PIXELS, DocumentError, open_document
from tests.reliability.fake_server import Exchange, FakeServer

QWENVL = shutil.which("qwenvl", path=str(Path(sys.executable).parent)) or "qwenvl"


def run(*args: str, timeout: int = 300, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", **extra_env}
    env.pop("QWENVL_MODEL", None)
    return subprocess.run([QWENVL, *args], capture_output=True, text=True, timeout=timeout, env=env)


def text_pdf(path: Path, pages: list[str], size: tuple[float, float] = (595, 842)) -> Path:
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format=size)
    pdf.set_font("helvetica", size=24)
    for text in pages:
        pdf.add_page()
        pdf.text(72, 144, text)
    pdf.output(str(path))
    return path


def empty_pdf(path: Path) -> Path:
    import pypdfium2 as pdfium

    pdfium.PdfDocument.new().save(str(path))
    return path


def test_a_page_claiming_a_huge_size_renders_within_the_cap(tmp_path: Path) -> None:
    huge = text_pdf(tmp_path / "huge.pdf", ["a huge page"], size=(14400, 14400))
    with open_document(huge) as doc:
        [page] = list(doc.pages())
        image, dpi = page.render(200)
    assert image.width * image.height <= MAX_RENDER_PIXELS and dpi <= 40
    assert abs(image.width - 14400 * dpi / 72) <= 1


def test_parse_goes_on_after_a_huge_page(tmp_path: Path) -> None:
    huge = text_pdf(tmp_path / "huge.pdf", ["a huge page"], size=(14400, 14400))
    good = text_pdf(tmp_path / "good.pdf", ["a normal page"])
    out = run("parse", str(huge), str(good), "--out", str(tmp_path / "out"), "--no-cache")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "out" / "good.jsonl").exists() and (tmp_path / "out" / "huge.jsonl").exists()
    [record] = [json.loads(line) for line in (tmp_path / "out" / "huge.jsonl").read_text().splitlines()]
    assert record["page_width"] * record["page_height"] <= MAX_RENDER_PIXELS


def test_unusable_cache_dir_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    good = text_pdf(tmp_path / "good.pdf", ["cached or not"])
    out = run("parse", str(good), "--out", str(tmp_path / "out"), "--cache-dir", str(blocker / "cache"))
    assert out.returncode == 0, out.stderr
    assert "not usable" in out.stderr and "Traceback" not in out.stderr
    assert (tmp_path / "out" / "good.jsonl").exists()


def test_a_cache_entry_of_another_page_is_not_returned(tmp_path: Path) -> None:
    doc = text_pdf(tmp_path / "two.pdf", ["first page words", "second page words"])
    parser = DocumentParser(cache_dir=tmp_path / "cache", progress=False)
    first = parser.parse(doc)
    entries = sorted((tmp_path / "cache").glob("*/*.json"))
    assert len(entries) == 2
    by_page = {json.loads(p.read_text())["page"]["number"]: p for p in entries}
    shutil.copy(by_page[1], by_page[2])  # page 2's entry now holds page 1's valid JSON
    again = DocumentParser(cache_dir=tmp_path / "cache", progress=False).parse(doc)
    assert [p.text for p in again.pages] == [p.text for p in first.pages]
    assert "second" in again.pages[1].text


def test_zero_page_pdf_is_named_as_such(tmp_path: Path) -> None:
    empty = empty_pdf(tmp_path / "empty.pdf")
    with pytest.raises(DocumentError, match="no pages"):
        open_document(empty)
    out = run("parse", str(empty), "--out", str(tmp_path / "out"), "--no-cache")
    assert out.returncode == 1 and "no pages" in out.stderr and "encrypted" not in out.stderr


def test_a_glob_that_matches_nothing_is_reported_and_the_rest_parsed(tmp_path: Path) -> None:
    good = text_pdf(tmp_path / "good.pdf", ["still parsed"])
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n")
    pattern = str(tmp_path / "missing-*.pdf")
    out = run("parse", pattern, str(broken), str(good), "--out", str(tmp_path / "out"), "--no-cache")
    assert out.returncode == 1
    assert "matches no file" in out.stderr and "Traceback" not in out.stderr
    assert (tmp_path / "out" / "good.jsonl").exists()


def test_a_model_that_cannot_load_is_one_line(tmp_path: Path) -> None:
    start = time.monotonic()
    image = tmp_path / "x.png"
    from tests.helpers import make_image

    make_image(32, 32).save(image)
    out = run("chat", str(image), "hi", "--model", str(tmp_path / "no-such-model"))
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "--model" in lines[0] and "--base-url" in lines[0]
    assert time.monotonic() - start < 60
    offline = run("chat", str(image), "hi", "--model", "no-org/no-such-model-xyz", HF_HUB_OFFLINE="1")
    assert offline.returncode == 2 and "Traceback" not in offline.stderr and "HF_HUB_OFFLINE" in offline.stderr


def test_a_server_that_is_not_vllm_is_one_line(tmp_path: Path, tiny_model: Path) -> None:
    def html(ex: Exchange) -> None:
        ex.send(200, "<html>proxy login</html>", {"Content-Type": "text/html"})

    image = tmp_path / "x.png"
    from tests.helpers import make_image

    make_image(32, 32).save(image)
    with FakeServer(html) as server:
        server.serve_models = False
        out = run("chat", str(image), "hi", "--base-url", server.url, "--model", str(tiny_model))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "127.0.0.1" in out.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    out = run("--debug", "chat", str(tmp_path / "x.png"), "hi", "--model", str(tmp_path / "none"))
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_cpu_memory_share_leaves_room() -> None:
    share = cpu_memory_share()
    assert 0.05 <= share <= 0.9
