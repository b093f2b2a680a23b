"""Ingest a corpus on Ray Data: pages to typed, boxed blocks as a Parquet dataset, then a downstream Ray job on it.

    pip install 'qwenvl[ray,pdf,ocr]'
    python cookbook/ray_data_ingest.py cookbook/data --out parsed/              # OCR, a local Ray cluster
    python cookbook/ray_data_ingest.py "/shared/archive/**/*.pdf" --out /shared/parsed --ray auto \\
        --model Qwen/Qwen2.5-VL-7B-Instruct --engines 8                           # the VLM, 8 GPU actors

`RayDocumentParser` reads pages as `DocumentParser` does (same options, blocks, statuses, fallback, page cache),
with tasks listing, rendering and OCR-ing pages and an actor pool of engines for the VLM. Each document's blocks
become one Parquet file; a second Ray Data job reads them all back (here: blocks per type and pages per status).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qwenvl.layout.export import write_blocks_parquet
from qwenvl.layout.ray import RayDocumentParser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", help="documents, folders or globs every Ray node can read")
    ap.add_argument("--out", default="parsed", help="folder of the Parquet dataset (one file per document)")
    ap.add_argument("--ray", default="local", help="'local' starts a cluster here; 'auto' joins the running one")
    ap.add_argument("--model", help="a Qwen-VL model for the VLM backend (default: OCR only)")
    ap.add_argument("--base-url", help="vLLM server(s) to send pages to instead of in-actor engines")
    ap.add_argument("--engines", type=int, default=1, help="engine actors (one model copy each)")
    ap.add_argument("--cache-dir", help="page cache on shared storage: a rerun resumes where a killed job stopped")
    args = ap.parse_args(argv)

    parser = RayDocumentParser(
        "vlm" if args.model else "ocr",
        model=args.model,
        base_url=args.base_url,
        address=args.ray,
        engines=args.engines,
        cache_dir=args.cache_dir,
        progress=True,
    )
    out = Path(args.out)
    statuses: Counter[str] = Counter()
    failed_documents = []
    for doc in parser.parse_many(args.paths):  # each document as soon as its pages are done, in input order
        if doc.error:
            failed_documents.append(doc.source)
            print(f"{doc.source}: {doc.error}", file=sys.stderr)
            continue
        write_blocks_parquet(doc, out / f"{Path(doc.source).stem}.parquet")
        statuses.update(page.status for page in doc.pages)

    import ray

    blocks = ray.data.read_parquet(str(out))  # the downstream job: any Ray Data (or Spark, pandas) reader
    by_type = {row["block_type"]: row["count()"] for row in blocks.groupby("block_type").count().take_all()}
    summary = {"statuses": dict(statuses), "blocks": by_type, "failed_documents": failed_documents, **parser.stats}
    print(summary)
    return summary


if __name__ == "__main__":
    main()
