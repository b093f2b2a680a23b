"""Document loader throughput and accuracy: every backend and OCR engine on the same synthetic pages, against
plain `pytesseract.image_to_string` (a Tesseract process per page, the common way) as the baseline.

Prints pages per second and character error rate (CER, in reading order, whitespace runs as one space) of:
- baseline: pytesseract.image_to_string, one page after another (needs the `tesseract` program on PATH);
- qwenvl ocr/tesseract: DocumentParser(backend="ocr"), Tesseract in-process, pages over a thread pool;
- qwenvl ocr/rapidocr: the same with RapidOCR (the engine for Chinese);
- qwenvl pdf_text: a digital PDF read from its text layer (its own pages and truth);
- qwenvl vlm: DocumentParser(backend="vlm") on the tiny random model (pages/s of the pipeline; CER is noise).

Usage: python bench/loader.py [--pages 8] [--no-vlm]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rapidfuzz.distance import Levenshtein

sys.path.insert(0, str(Path(__file__).parent))
from _common import DTYPE, model_path  # noqa: E402

from qwenvl.layout import DocumentParser  # noqa: E402
from qwenvl.layout.ocr import RapidOCREngine, TesseractEngine  # noqa: E402
from qwenvl_testkit.synthetic_pages import PAGE_KINDS, make_page, write_digital_pdf  # noqa: E402


def cer(got: str, want: str) -> float:
    got, want = " ".join(got.split()), " ".join(want.split())
    return Levenshtein.distance(got, want) / max(1, len(want))


TABLE: list[tuple[str, str, str, str]] = []


def row(name: str, pages: int, seconds: float, errors: list[float] | None, base: float | None) -> str:
    """A printed result line; also kept in TABLE for bench/run_all.py."""
    rate = pages / seconds
    err = f"{100 * sum(errors) / len(errors):.2f}%" if errors else "n/a"
    ratio = f"{rate / base:.2f}x" if base else "1.00x" if base is None else "n/a"
    TABLE.append((name, f"{rate:.2f}", err, ratio))
    return f"{name:30s} {pages:5d} {seconds:8.2f} {rate:9.2f} {err:>9s} {ratio:>8s}"


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=8)
    ap.add_argument("--no-vlm", action="store_true")
    args = ap.parse_args(argv)
    TABLE.clear()

    tmp = Path(tempfile.mkdtemp(prefix="qwenvl-bench-"))
    pages = [
        make_page(
            PAGE_KINDS[i % len(PAGE_KINDS)], seed=100 + i, rotate=(0.8 if i % 2 else 0.0), noise=(0.6 if i % 2 else 0.0)
        )
        for i in range(args.pages)
    ]
    paths = []
    for i, page in enumerate(pages):
        path = tmp / f"page{i:03d}.png"
        page.image.save(path, dpi=(200, 200))
        paths.append(path)
    truth = {str(p): page.text for p, page in zip(paths, pages, strict=True)}
    print(
        f"{len(pages)} synthetic pages (1700x2200, 200 dpi; {', '.join(PAGE_KINDS)}; every other one rotated and "
        f"noisy), {os.cpu_count()} CPU cores\n"
    )
    print(f"{'backend':30s} {'pages':>5s} {'seconds':>8s} {'pages/s':>9s} {'CER':>9s} {'vs base':>8s}")

    base_rate = 0.0
    if shutil.which("tesseract"):
        import pytesseract
        from PIL import Image

        start = time.perf_counter()
        texts = [pytesseract.image_to_string(Image.open(p)) for p in paths]
        seconds = time.perf_counter() - start
        base_rate = len(paths) / seconds
        errs = [cer(t, truth[str(p)]) for t, p in zip(texts, paths, strict=True)]
        print(row("baseline pytesseract", len(paths), seconds, errs, None))
    else:
        print("baseline pytesseract: the `tesseract` program is not installed (Debian: apt-get install tesseract-ocr)")

    def run(name: str, parser: DocumentParser, sources: list[Path], want: dict[str, str] | None) -> None:
        start = time.perf_counter()
        docs = list(parser.parse_many(sources))
        seconds = time.perf_counter() - start
        n = sum(len(d.pages) for d in docs)
        errs = [cer(d.text, want[d.source]) for d in docs] if want else None
        print(row(name, n, seconds, errs, base_rate or 0.0))

    run("qwenvl ocr/tesseract", DocumentParser(backend="ocr", ocr_engine=TesseractEngine()), paths, truth)
    run(
        "qwenvl ocr/tesseract 1 thread",
        DocumentParser(backend="ocr", ocr_engine=TesseractEngine(), ocr_workers=1),
        paths,
        truth,
    )
    run("qwenvl ocr/rapidocr", DocumentParser(backend="ocr", ocr_engine=RapidOCREngine()), paths, truth)

    digital = tmp / "digital.pdf"
    digital_truth = write_digital_pdf(digital, pages=args.pages)
    want = {str(digital): "\n\n".join(b.text for page in digital_truth for b in page)}
    run("qwenvl pdf_text (digital)", DocumentParser(backend="auto"), [digital], want)

    if not args.no_vlm:
        from qwenvl import VLLMEngine

        with VLLMEngine(model_path(), dtype=DTYPE, max_model_len=4096, gpu_memory_utilization=0.2) as engine:
            parser = DocumentParser(
                engine,
                backend="vlm",
                max_pixels=256 * 28 * 28,
                max_tokens=512,
                min_blocks=2,
                max_blocks=4,
                max_text_chars=24,
                fallback=False,
            )
            list(parser.parse_many(paths[:2]))  # warm-up
            parser.engine_calls = 0
            run("qwenvl vlm (tiny model)", parser, paths, None)
            print(f"  (VLM pages went to the engine in {parser.engine_calls} call(s); CER of a random model is noise)")
    shutil.rmtree(tmp, ignore_errors=True)
    return list(TABLE)


if __name__ == "__main__":
    main()
