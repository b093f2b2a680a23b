"""The loader on the real-document set (tests/data/real/, truth in tests/layout/test_real_documents.py): per
page, the key phrases found in reading order, the headings typed as headings, blocks typed as headings that
are not, CER where the text is transcribed, the backend and any text-layer rejection; then the totals and the
pages per second of the default DocumentParser (text layer, else Tesseract).

Usage: python bench/real_documents.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qwenvl.layout import DocumentParser  # noqa: E402
from tests.layout.test_real_documents import (  # noqa: E402
    HEADING_TRUTH,
    HEADINGS,
    PHRASES,
    REAL,
    TRUTH_TEXT,
    cer,
    flat,
    missing_in_order,
    same_heading,
)


def main() -> None:
    parser = DocumentParser()
    pages = {}
    start = time.perf_counter()
    for name in sorted({name for name, _ in PHRASES}):
        for page in parser.parse(REAL / name).pages:
            pages[(name, page.number)] = page
    seconds = time.perf_counter() - start
    in_order = total_phrases = found_h = total_h = extra_h = 0
    print(f"{'page':32s} {'backend':8s} {'phrases':>8s} {'headings':>9s} {'extra':>6s} {'CER':>7s}  rejected")
    for key, page in sorted(pages.items()):
        ok = len(PHRASES[key]) - len(missing_in_order(flat(page.text), PHRASES[key]))
        in_order += ok
        total_phrases += len(PHRASES[key])
        typed = [flat(b.text) for b in page.blocks if b.type in HEADINGS]
        want = HEADING_TRUTH.get(key, [])
        hit = [h for h in want if any(same_heading(h, t) for t in typed)]
        extra = [t for t in typed if not any(same_heading(h, t) for h in want)]
        found_h, total_h, extra_h = found_h + len(hit), total_h + len(want), extra_h + len(extra)
        err = f"{100 * cer(page.text, TRUTH_TEXT[key]):.2f}%" if key in TRUTH_TEXT else ""
        print(
            f"{key[0] + ' p' + str(key[1]):32s} {page.backend:8s} {ok:>3d}/{len(PHRASES[key]):<4d} "
            f"{len(hit):>4d}/{len(want):<4d} {len(extra):>6d} {err:>7s}  {(page.text_layer_rejected or '')[:50]}"
        )
        if extra:
            print(f"{'':32s} typed as headings, not in the truth: {extra}")
    print(
        f"\n{len(pages)} pages: {in_order}/{total_phrases} phrases in order, {found_h}/{total_h} headings typed "
        f"({100 * found_h / total_h:.0f}%), {extra_h} other blocks typed as headings, "
        f"{len(pages) / seconds:.2f} pages/s ({seconds:.1f} s)"
    )


if __name__ == "__main__":
    main()
