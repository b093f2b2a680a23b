"""Ray Data on one machine vs one process: the same pages, the same OCR, the same blocks.

Prints, from one run over the same corpus (default 44 scanned pages in 7 documents, OCR backend, no cache):
  - RayDocumentParser on a local Ray cluster (all CPUs) ÷ DocumentParser throughput (rounds interleaved;
    the cluster is started once, before timing: its start is printed apart)
  - Ray's scheduling overhead per page: the same pipeline shape (tasks of 4 pages) with a no-op page stage

    python bench/ray_ingest.py [--pages 44] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import interleaved  # noqa: E402


def make_corpus(folder: Path, pages: int) -> int:
    """Scanned PDFs of 8 pages and single PNG pages, ``pages`` in all; returns the number of documents."""
    from qwenvl_testkit.synthetic_pages import make_pages, write_pdf

    images = [p.image for p in make_pages(pages, seed=11)]
    docs = 0
    while images:
        if len(images) >= 8:
            write_pdf(images[:8], folder / f"scan-{docs:02d}.pdf")
            images = images[8:]
        else:
            images.pop().save(folder / f"page-{docs:02d}.png")
        docs += 1
    return docs


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    """Run the benchmark and print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=44)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    import ray

    from qwenvl.layout import DocumentParser
    from qwenvl.layout.ray import RayDocumentParser

    folder = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    docs = make_corpus(folder, args.pages)
    start = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    cluster_start = time.perf_counter() - start
    cpus = int(ray.cluster_resources().get("CPU", 0))
    local = DocumentParser(backend="ocr", progress=False)
    remote = RayDocumentParser(backend="ocr", progress=False)
    results: dict[str, list[str]] = {}

    def run(name: str, parser: object) -> None:
        out = [d.to_json() for d in parser.parse_many(folder)]  # type: ignore[attr-defined]
        assert sum(len(d) for d in out) and len(out) == docs
        results[name] = out

    run("local", local)  # warm-up: OCR models loaded, Ray workers started
    run("ray", remote)
    t = interleaved({"local": lambda: run("local", local), "ray": lambda: run("ray", remote)}, rounds=args.rounds)
    assert results["local"] == results["ray"], "Ray's blocks differ from one process's"

    def noop(batch: dict) -> dict:
        return batch

    rows = ray.data.range(args.pages).repartition(target_num_rows_per_block=4)
    list(rows.map_batches(noop, batch_size=4).iter_rows())  # warm-up
    start = time.perf_counter()
    list(rows.map_batches(noop, batch_size=4).iter_rows())
    scheduling = (time.perf_counter() - start) / args.pages
    ray.shutdown()

    n = args.pages
    ratio = t["local"] / t["ray"]
    overhead = (t["ray"] - t["local"]) / n
    print(f"{n} scanned pages in {docs} documents, OCR, {args.rounds} rounds; Ray: local cluster of {cpus} CPUs")
    print(f"Ray cluster start (once)                 {cluster_start:.1f} s")
    print(f"DocumentParser (one process)             {t['local']:.2f} s  {n / t['local']:.2f} pages/s")
    print(f"RayDocumentParser (local Ray cluster)    {t['ray']:.2f} s  {n / t['ray']:.2f} pages/s")
    print(f"Ray ÷ one process                        {ratio:.2f}x throughput (same blocks: True)")
    print(f"Ray's cost per page vs one process       {overhead * 1000:+.0f} ms")
    print(f"Ray Data scheduling per page (no-op)     {scheduling * 1000:.1f} ms")
    return [
        (
            f"`RayDocumentParser` (local Ray, {cpus} CPUs) ÷ `DocumentParser`, {n} pages OCR",
            f"{ratio:.2f}x throughput; Ray Data scheduling {scheduling * 1000:.0f} ms/page",
        )
    ]


if __name__ == "__main__":
    main()
