"""The document pipeline on a real local Ray cluster (2 CPUs): the same pages as `DocumentParser` in one process,
with workers killed, jobs interrupted and resumed, corrupt files, and the VLM in an actor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from qwenvl.errors import LayoutError
from qwenvl.layout import DocumentParser, ParsedDocument
from qwenvl_testkit.synthetic_pages import make_pages, write_digital_pdf, write_pdf

ray = pytest.importorskip("ray", reason="the Ray tests need qwenvl[ray] (scripts/install.sh installs it)")

from qwenvl.layout.ray import RayDocumentParser  # noqa: E402

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A local Ray cluster on the machine's 2 CPUs, for this module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    deadline = time.monotonic() + 20
    while _ray_workers("") and time.monotonic() < deadline:
        time.sleep(0.2)
    left = _ray_workers("")
    for proc in left:
        proc.kill()
    assert not left, f"processes outlived the Ray cluster: {[p.info['cmdline'] for p in left]}"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 pages in 6 documents (scanned PDFs, a digital PDF, a multi-page TIFF, PNGs) and a corrupt PDF."""
    folder = tmp_path_factory.mktemp("corpus")
    images = [p.image for p in make_pages(18, seed=3)]
    write_pdf(images[0:8], folder / "a-scan.pdf")
    write_pdf(images[8:12], folder / "b-scan.pdf")
    write_digital_pdf(folder / "c-digital.pdf", seed=1, pages=3)
    images[12].save(folder / "d-page.png")
    images[13].save(folder / "e-tiff.tif", save_all=True, append_images=images[14:16], compression="tiff_deflate")
    images[16].save(folder / "f-page.png")
    (folder / "g-corrupt.pdf").write_bytes(b"%PDF-1.4 cut off")
    return folder


@pytest.fixture(scope="module")
def reference(corpus: Path) -> list[ParsedDocument]:
    """The corpus read by `DocumentParser` in this process (OCR)."""
    return list(DocumentParser(backend="ocr", progress=False).parse_many(corpus))


def _dumps(docs: list[ParsedDocument]) -> list[str]:
    return [d.to_json() for d in docs]


def test_ocr_on_ray_equals_one_process_and_a_corrupt_file_fails_alone(
    cluster: None, corpus: Path, reference: list[ParsedDocument]
) -> None:
    parser = RayDocumentParser(backend="ocr", progress=False)
    out = list(parser.parse_many(corpus))
    assert [Path(d.source).name for d in out] == sorted(p.name for p in corpus.iterdir())
    assert sum(len(d.pages) for d in out) == 20 and len(out) == 7
    assert _dumps(out) == _dumps(reference)  # the same blocks, boxes, order, statuses
    corrupt = out[-1]
    assert corrupt.error and "g-corrupt.pdf" in corrupt.error and corrupt.pages == []
    assert all(d.error is None and all(p.status == "ok" for p in d.pages) for d in out[:-1])
    assert parser.stats == {"pages": 20, "duplicates": 0, "lost": 0}


def test_hostile_pdfs_on_ray_fail_their_pages_alone(cluster: None, tmp_path: Path) -> None:
    """A junk page object, a page tree that claims a million pages and a decompression bomb, on Ray (the text
    layer in tasks) as in one process: each bad page fails alone, with its typed reason, and the good document
    after them is read."""
    from tests.reliability import hostile_pdfs as hostile

    for name, data in [
        ("a-junk.pdf", hostile.junk_page_object()),
        ("b-lie.pdf", hostile.page_count_lie()),
        ("c-bomb.pdf", hostile.content_bomb()),
        ("d-good.pdf", hostile.good_pdf()),
    ]:
        (tmp_path / name).write_bytes(data)
    out = {Path(d.source).name: d for d in RayDocumentParser(progress=False).parse_many(tmp_path)}
    assert [p.status for p in out["a-junk.pdf"].pages] == ["ok", "failed", "ok"]
    assert out["a-junk.pdf"].pages[1].error.startswith("PageError:")
    assert [p.status for p in out["b-lie.pdf"].pages] == ["ok", "ok", "failed"]
    [bomb] = out["c-bomb.pdf"].pages
    assert bomb.status == "failed" and bomb.error.startswith("PageLimitError:") and "c-bomb.pdf page 1" in bomb.error
    assert [p.status for p in out["d-good.pdf"].pages] == ["ok"] and "good document" in out["d-good.pdf"].text


def test_cli_with_ray_writes_the_same_files(cluster: None, corpus: Path, tmp_path: Path) -> None:
    from qwenvl.cli import main

    ray_out, local_out = tmp_path / "A", tmp_path / "B"
    common = ["--backend", "ocr", "--no-cache"]
    assert (
        main(
            ["parse", str(corpus), "--ray", "local", "--out", str(ray_out), "--parquet", str(tmp_path / "pq"), *common]
        )
        == 1
    )
    assert main(["parse", str(corpus), "--out", str(local_out), *common]) == 1  # 1: the corrupt file
    files = sorted(p.relative_to(local_out) for p in local_out.rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".jsonl"]) == 6 and len([f for f in files if f.suffix == ".png"]) == 20
    assert sorted(p.relative_to(ray_out) for p in ray_out.rglob("*") if p.is_file()) == files
    for name in files:
        a, b = (ray_out / name).read_bytes(), (local_out / name).read_bytes()
        if name.suffix == ".jsonl":
            a, b = b"".join(sorted(a.splitlines(True))), b"".join(sorted(b.splitlines(True)))
        assert a == b, name
    blocks = ray.data.read_parquet(str(tmp_path / "pq")).take_all()
    lines = [
        json.loads(line) for f in files if f.suffix == ".jsonl" for line in (local_out / f).read_text().splitlines()
    ]
    assert len(blocks) == len(lines) > 0
    assert sorted((b["source"], b["page"], b["block_id"], b["text"]) for b in blocks) == sorted(
        (r["source"], r["page"], r["block_id"], r["text"]) for r in lines
    )


def _ray_workers(marker: str) -> list[psutil.Process]:
    """This test process's own Ray workers running `marker` (the local cluster is started under it), never
    another process's."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if cmdline.startswith("ray::") and marker in cmdline:
            found.append(proc)
    return found


def test_a_worker_killed_mid_job_loses_and_repeats_no_page(
    cluster: None, corpus: Path, reference: list[ParsedDocument]
) -> None:
    parser = RayDocumentParser(backend="ocr", pages_per_task=2, progress=False)
    killed: list[int] = []
    docs = parser.parse_many(corpus)
    out = [next(docs)]  # the first document is back: the job is under way
    deadline = time.monotonic() + 60
    while not killed and time.monotonic() < deadline:
        for proc in _ray_workers("_parse_cpu"):
            proc.kill()
            killed.append(proc.pid)
        time.sleep(0.05)
    out += list(docs)
    assert killed, "no Ray worker was running the parse task"
    assert _dumps(out) == _dumps(reference)
    assert parser.stats["pages"] == 20 and parser.stats["lost"] == 0


def test_an_interrupted_job_resumes_from_the_page_cache(
    cluster: None, corpus: Path, reference: list[ParsedDocument], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "qwenvl.cli", "parse", str(corpus), "--ray", "local", "--backend", "ocr"]
    command += ["--out", str(tmp_path / "out"), "--cache-dir", str(cache), "--no-images"]
    job = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(cache.glob("*/*.json"))) < 4 and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.1)
        os.killpg(job.pid, signal.SIGKILL)  # the job and its Ray cluster, as a killed terminal would
    finally:
        job.wait(timeout=30)
    before = {p: p.stat().st_mtime_ns for p in cache.glob("*/*.json")}
    assert 4 <= len(before) < 20, "the job was not interrupted mid-way"
    parser = RayDocumentParser(backend="ocr", cache_dir=cache, progress=False)
    out = list(parser.parse_many(corpus))
    assert _dumps(out) == _dumps(reference)  # nothing lost, nothing twice
    after = {p: p.stat().st_mtime_ns for p in cache.glob("*/*.json")}
    assert len(after) == 20
    assert all(after[p] == mtime for p, mtime in before.items())  # finished pages were read, not parsed again


def test_bad_arguments_are_refused_before_anything_runs(corpus: Path) -> None:
    with pytest.raises(LayoutError, match="model="):
        RayDocumentParser(backend="vlm")
    with pytest.raises(LayoutError, match="engines=0"):
        RayDocumentParser(backend="ocr", engines=0)
    with pytest.raises(LayoutError, match="DocumentParser"):
        next(RayDocumentParser(backend="ocr").parse_many([b"%PDF-1.4"]))


@pytest.mark.engine
def test_vlm_in_an_actor_matches_the_in_process_engine(
    cluster: None, vllm_engine: Any, tiny_model: Path, corpus: Path
) -> None:
    from tests.helpers import EAGER, ENGINE_ARGS

    docs = [corpus / "b-scan.pdf", corpus / "d-page.png", corpus / "e-tiff.tif"]  # 8 pages
    args: dict[str, Any] = {"max_pixels": 64 * 28 * 28, "max_tokens": 512, "min_blocks": 2, "max_blocks": 4}
    args |= {"max_text_chars": 24, "fallback": False, "progress": False, "batch_size": 8}
    local = list(DocumentParser(vllm_engine, backend="vlm", **args).parse_many(docs))
    options = {**ENGINE_ARGS, "engine_kwargs": EAGER}
    parser = RayDocumentParser("vlm", model=str(tiny_model), engine_options=options, **args)
    out = list(parser.parse_many(docs))
    assert [d.source for d in out] == [d.source for d in local]
    for mine, theirs in zip(out, local, strict=True):
        assert [p.usage.image_tokens for p in mine.pages] == [p.usage.image_tokens for p in theirs.pages]
        assert [(p.width, p.height, p.dpi) for p in mine.pages] == [(p.width, p.height, p.dpi) for p in theirs.pages]
        for page in mine.pages:
            assert page.status == "ok" and page.backend == "vlm", page.error
            assert 2 <= len(page.blocks) <= 4
            for block in page.blocks:
                assert 0 <= block.bbox.x0 <= block.bbox.x1 <= page.width
                assert 0 <= block.bbox.y0 <= block.bbox.y1 <= page.height
                assert len(block.text) <= 24
    assert parser.stats == {"pages": 8, "duplicates": 0, "lost": 0}
