"""Hostile PDFs never lose a run: pages that cannot be loaded, page sizes past the render cap, quadratic pages,
decompression bombs and content pdfium drops each fail (or are read) alone, under a memory bound, and the good
document after each is parsed right, in `parse_many`, the command and the framework loaders.

Each parse runs in a fresh Python process (`run_parse`), so that its peak memory (its own and its PDF worker's)
is that of the hostile pages alone, and under a hard timeout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qwenvl.layout import DocumentParser
from qwenvl.layout.pages import MAX_RENDER_PIXELS, PdfLimits, capped_dpi, open_document
from tests.reliability import hostile_pdfs as H

QWENVL = shutil.which("qwenvl", path=str(Path(sys.executable).parent)) or "qwenvl"
#: the most memory any one page may cost: the process's peak and its PDF worker's peak, each
PEAK_LIMIT_MB = 1500
GOOD_TEXT = "The good document after the bad one"

_SCRIPT = """
import json, resource, sys, time
from qwenvl.layout import DocumentParser, ParserOptions
from qwenvl.layout.options import PageOptions
from qwenvl.layout.pdf_worker import PdfLimits, _WORKERS
paths, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
options = ParserOptions(pages=PageOptions(limits=PdfLimits(timeout=timeout)))
out = []
start = time.monotonic()
for doc in DocumentParser(options=options).parse_many(paths):
    pages = [{"number": p.number, "status": p.status, "error": p.error, "text": p.text, "backend": p.backend,
              "pixels": p.width * p.height} for p in doc.pages]
    out.append({"source": doc.source, "error": doc.error, "pages": pages, "seconds": time.monotonic() - start})
    start = time.monotonic()
for worker in list(_WORKERS.values()):
    worker.close()
# this process's own peak: VmHWM starts anew at exec (ru_maxrss keeps the forking test process's); the workers'
# peaks: ru_maxrss of the children that ended (a worker forked from this process counts this one's size too)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
peak = {"self": int(hwm.split()[1]) // 1024,
        "worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024}
print(json.dumps({"docs": out, "peak_mb": peak}))
"""


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def run_parse(paths: list[Path], *, page_timeout: float = 120.0, timeout: int = 240) -> dict[str, Any]:
    """`parse_many` over ``paths`` in a fresh process: the documents and the peak memory (MB) of the process and
    of its PDF worker."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps([str(p) for p in paths]), str(page_timeout)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result["peak_mb"]), [round(d["seconds"], 2) for d in result["docs"]])
    return result


def assert_good_after(result: dict[str, Any]) -> None:
    """The good document (last) is parsed right, and no page cost more memory than the limit."""
    good = result["docs"][-1]
    assert good["error"] is None and [p["status"] for p in good["pages"]] == ["ok"], good
    assert GOOD_TEXT in good["pages"][0]["text"]
    assert result["peak_mb"]["self"] <= PEAK_LIMIT_MB and result["peak_mb"]["worker"] <= PEAK_LIMIT_MB


# ---- 1. pages that cannot be loaded ------------------------------------------------------------------------


def test_a_page_tree_claiming_a_million_pages_fails_its_missing_pages_alone(tmp_path: Path) -> None:
    lie = write(tmp_path, "lie.pdf", H.page_count_lie(1_000_000))
    result = run_parse([lie, write(tmp_path, "good.pdf", H.good_pdf())])
    doc = result["docs"][0]
    assert doc["error"] is None
    assert [(p["number"], p["status"]) for p in doc["pages"]] == [(1, "ok"), (2, "ok"), (3, "failed")]
    assert "second real page" in doc["pages"][1]["text"]
    missing = doc["pages"][2]["error"]
    assert missing.startswith("PageError:") and "lie.pdf pages 3-1000000" in missing and "claims 1000000" in missing
    assert_good_after(result)


def test_a_junk_page_object_fails_that_page_and_names_file_and_page(tmp_path: Path) -> None:
    junk = write(tmp_path, "junk.pdf", H.junk_page_object())
    result = run_parse([junk, write(tmp_path, "good.pdf", H.good_pdf())])
    pages = result["docs"][0]["pages"]
    assert [p["status"] for p in pages] == ["ok", "failed", "ok"]
    assert "page 3 of three" in pages[2]["text"]
    assert pages[1]["error"].startswith("PageError:") and "junk.pdf page 2" in pages[1]["error"]
    assert_good_after(result)


def test_a_pdf_whose_pages_all_fail_to_load_is_a_document_error(tmp_path: Path) -> None:
    none = H.page_count_lie(1000).replace(b"/Kids [4 0 R 6 0 R]", b"/Kids [3 0 R]")
    result = run_parse([write(tmp_path, "none.pdf", none), write(tmp_path, "good.pdf", H.good_pdf())])
    assert "claims 1000 pages, but none of them can be loaded" in result["docs"][0]["error"]
    assert_good_after(result)


# ---- 2. page sizes past the render cap ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height"), [(1e8, 1e8), (14_400_000, 1), (1, 14_400_000), (8000.3, 8000.7), (0.01, 0.01)]
)
def test_the_render_cap_holds_in_pixels_for_any_page_size(width: float, height: float) -> None:
    import math

    scale = capped_dpi(width, height, 200.0) / 72
    assert max(1, math.ceil(width * scale)) * max(1, math.ceil(height * scale)) <= MAX_RENDER_PIXELS


def test_a_page_as_big_as_a_country_is_parsed_and_drawn_within_the_cap(tmp_path: Path) -> None:
    giant = write(tmp_path, "giant.pdf", H.giant_page())
    sliver = write(tmp_path, "sliver.pdf", H.sliver_page())
    good = write(tmp_path, "good.pdf", H.good_pdf())
    with open_document(giant) as doc:
        image, dpi = doc.page(1).render(200)
    assert image.width * image.height <= MAX_RENDER_PIXELS and dpi < 0.01
    result = run_parse([giant, sliver, good])
    [page] = result["docs"][0]["pages"]
    assert page["status"] == "ok" and "as big as a country" in page["text"]
    assert page["pixels"] <= MAX_RENDER_PIXELS
    assert result["docs"][1]["pages"][0]["pixels"] <= MAX_RENDER_PIXELS
    assert_good_after(result)
    # the command draws each page too: at the recorded resolution, within the cap, and goes on
    out = subprocess.run(
        [QWENVL, "parse", str(giant), str(good), "--out", str(tmp_path / "out"), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    import PIL.Image

    with PIL.Image.open(tmp_path / "out" / "giant" / "page-001.png") as drawn:
        assert drawn.width * drawn.height <= MAX_RENDER_PIXELS
    assert (tmp_path / "out" / "good" / "page-001.png").exists()


# ---- 3. quadratic pages ------------------------------------------------------------------------------------


def test_a_page_of_500000_one_character_objects_is_parsed(tmp_path: Path) -> None:
    """Before the sweep in `group_lines`, this page took about 200 s (every line against every region); the
    page's 60 s deadline here (6 times the 10 s it is to take) stops a return of that."""
    dense = write(tmp_path, "dense.pdf", H.one_char_objects(500_000))
    result = run_parse([dense, write(tmp_path, "good.pdf", H.good_pdf())], page_timeout=60)
    [page] = result["docs"][0]["pages"]
    assert page["status"] == "ok" and page["backend"] == "pdf_text", page["error"]
    assert sum(ch.isalpha() for ch in page["text"]) == 500_000
    assert_good_after(result)


def test_a_page_of_50000_separate_one_character_blocks_is_parsed(tmp_path: Path) -> None:
    """Characters spaced apart so that each is a block of its own: the steps that compare blocks with their
    neighbours (line fragments, labels) find them in a grid; comparing every pair took minutes here."""
    sparse = write(tmp_path, "sparse.pdf", H.one_char_objects(50_000, columns=500))
    result = run_parse([sparse, write(tmp_path, "good.pdf", H.good_pdf())], page_timeout=60)
    [page] = result["docs"][0]["pages"]
    assert page["status"] == "ok" and page["backend"] == "pdf_text", page["error"]
    assert sum(ch.isalpha() for ch in page["text"]) == 50_000
    assert_good_after(result)


def test_a_page_past_its_deadline_fails_alone_and_the_reader_goes_on(tmp_path: Path) -> None:
    dense = write(tmp_path, "dense.pdf", H.one_char_objects(300_000))
    result = run_parse([dense, write(tmp_path, "good.pdf", H.good_pdf())], page_timeout=0.5)
    [page] = result["docs"][0]["pages"]
    assert page["status"] == "failed" and page["error"].startswith("PageLimitError:")
    assert "dense.pdf page 1" in page["error"] and "0.5 s deadline" in page["error"]
    assert_good_after(result)


# ---- 4. decompression bombs --------------------------------------------------------------------------------


def test_a_content_stream_bomb_fails_its_page_within_the_memory_bound(tmp_path: Path) -> None:
    bomb = write(tmp_path, "bomb.pdf", H.content_bomb(2 << 30))
    assert bomb.stat().st_size < 3 << 20
    result = run_parse([bomb, write(tmp_path, "good.pdf", H.good_pdf())])
    [page] = result["docs"][0]["pages"]
    assert page["status"] == "failed" and page["error"].startswith("PageLimitError:")
    assert "bomb.pdf page 1" in page["error"] and "memory limit" in page["error"]
    assert_good_after(result)


def test_an_image_bomb_is_drawn_within_the_memory_bound(tmp_path: Path) -> None:
    bomb = write(tmp_path, "image-bomb.pdf", H.image_bomb(30_000))
    result = run_parse([bomb, write(tmp_path, "good.pdf", H.good_pdf())])
    [page] = result["docs"][0]["pages"]
    assert page["status"] == "ok" and page["pixels"] <= MAX_RENDER_PIXELS
    assert_good_after(result)


def test_the_command_reads_a_bomb_page_once_and_goes_on(tmp_path: Path) -> None:
    bomb = write(tmp_path, "bomb.pdf", H.content_bomb(2 << 30))
    good = write(tmp_path, "good.pdf", H.good_pdf())
    out = subprocess.run(
        [QWENVL, "parse", str(bomb), str(good), "--out", str(tmp_path / "out"), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("stopped the PDF reader") == 2  # the log line and the page's line: one reading
    assert GOOD_TEXT in (tmp_path / "out" / "good.md").read_text()
    assert not (tmp_path / "out" / "bomb").exists()  # a failed page is not drawn (not inflated again)


# ---- 5. content pdfium drops -------------------------------------------------------------------------------


def test_a_page_whose_content_pdfium_drops_says_so(tmp_path: Path) -> None:
    deep = write(tmp_path, "deep.pdf", H.nested_forms(200))
    shallow = write(tmp_path, "shallow.pdf", H.nested_forms(40))
    result = run_parse([deep, shallow, write(tmp_path, "good.pdf", H.good_pdf())])
    [page] = result["docs"][0]["pages"]
    assert page["status"] == "failed" and "pdfium could not read all of the page" in page["error"]
    assert "forms nested over 40 deep" in page["error"]
    [read] = result["docs"][1]["pages"]  # 40 levels: pdfium reads them all
    assert read["status"] == "ok" and "text at the bottom of the forms" in read["text"]
    assert_good_after(result)


def test_deeply_nested_resources_are_read() -> None:
    with open_document(H.nested_resources(5000)) as doc:
        layer = doc.page(1).text_layer(200)
    assert layer is not None and "buried" in " ".join(b.text for b in layer.blocks)


# ---- every class in one run, through the command and the loaders --------------------------------------------


@pytest.fixture(scope="module")
def hostile_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    write(folder, "a-lie.pdf", H.page_count_lie(1_000_000))
    write(folder, "b-junk.pdf", H.junk_page_object())
    write(folder, "c-giant.pdf", H.giant_page())
    write(folder, "d-bomb.pdf", H.content_bomb(2 << 30))
    write(folder, "e-deep.pdf", H.nested_forms(200))
    write(folder, "f-truncated.pdf", H.good_pdf()[:300])
    write(folder, "z-good.pdf", H.good_pdf())
    return folder


def test_the_command_reads_every_readable_page_of_a_hostile_folder(hostile_folder: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [QWENVL, "parse", str(hostile_folder), "--out", str(tmp_path / "out"), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    summary = out.stdout.strip().splitlines()[-1]
    assert summary == "pages: 10 (ok 6, fallback 0, failed 4); documents not readable: 1", summary
    assert GOOD_TEXT in (tmp_path / "out" / "z-good.md").read_text()
    assert "page 3 of three" in (tmp_path / "out" / "b-junk.md").read_text()


def test_the_framework_loaders_keep_every_readable_page(hostile_folder: Path) -> None:
    pytest.importorskip("langchain_qwenvl")
    from langchain_qwenvl import QwenVLDocumentLoader
    from llama_index.readers.qwenvl import QwenVLReader

    files = sorted(str(p) for p in hostile_folder.glob("*.pdf") if p.name != "f-truncated.pdf")
    parser = DocumentParser(progress=False)
    docs = QwenVLDocumentLoader(files, parser=parser, mode="page").load()
    by_file: dict[str, list[str]] = {}
    for doc in docs:
        by_file.setdefault(Path(doc.metadata["source"]).name, []).append(doc.metadata["page_status"])
    assert by_file["b-junk.pdf"] == ["ok", "failed", "ok"] and by_file["z-good.pdf"] == ["ok"]
    nodes = QwenVLReader(parser).load_data(files)
    assert sum(GOOD_TEXT in n.get_content() for n in nodes) == 1
    assert {n.metadata["page_status"] for n in nodes if "d-bomb" in n.metadata["source"]} == {"failed"}


def test_pdf_limits_reach_the_worker_and_bad_limits_are_refused() -> None:
    import math

    from qwenvl.errors import LayoutError
    from qwenvl.layout.pdf_worker import worker_for

    small = worker_for(PdfLimits(memory=512 << 20, timeout=5))
    assert small is worker_for(PdfLimits(memory=512 << 20, timeout=99)) and small.memory == 512 << 20
    assert small is not worker_for(PdfLimits())
    for bad in ({"timeout": math.inf}, {"timeout": 0}, {"start_timeout": -1}, {"memory": 1000}):
        with pytest.raises(LayoutError, match="PdfLimits"):
            PdfLimits(**bad)  # type: ignore[arg-type]


def test_a_junk_page_amid_good_ones_and_a_lying_count_lose_no_good_page() -> None:
    """Page 2 of 3 is junk and the tree claims 4: pages 1 and 3 are read, 2 and the missing 4 fail."""
    data = H.junk_page_object().replace(b"/Count 3", b"/Count 4")
    parsed = DocumentParser(progress=False).parse(data, name="junk4.pdf")
    assert [(p.number, p.status) for p in parsed.pages] == [(1, "ok"), (2, "failed"), (3, "ok"), (4, "failed")]
    assert "page 3 of three" in parsed.pages[2].text and "junk4.pdf page 4" in (parsed.pages[3].error or "")


def test_open_documents_survive_a_worker_that_died_while_idle() -> None:
    """A worker killed between calls (the kernel's OOM killer, a user) is replaced, and the documents that were
    open in it are opened again in the new one: their pages read as before."""
    from qwenvl.layout.pdf_worker import worker_for

    with open_document(H.good_pdf(), name="a.pdf") as a, open_document(H.junk_page_object(), name="b.pdf") as b:
        first = a.page(1).text_layer(100)
        worker = worker_for(a.limits)
        assert worker._proc is not None
        worker._proc.kill()
        worker._proc.wait(10)
        again = a.page(1).text_layer(100)
        assert first is not None and again is not None
        assert [blk.text for blk in again.blocks] == [blk.text for blk in first.blocks]
        assert b.page(3).size_pt == (612.0, 792.0) and b.page(2).error is not None
