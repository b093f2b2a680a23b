"""Regenerates the sample files of the cookbook (synthetic, no real data): python cookbook/data/make_samples.py"""

from __future__ import annotations

from pathlib import Path

from qwenvl_testkit.synthetic_pages import make_page

HERE = Path(__file__).parent


def main() -> None:
    pages = [
        make_page("article", seed=11, noise=0.4),
        make_page("table", seed=12, rotate=0.5, noise=0.4),
        make_page("two_column", seed=13, noise=0.4),
    ]
    first, *rest = [p.image.convert("L") for p in pages]
    first.save(HERE / "sample-scan.pdf", "PDF", resolution=200.0, save_all=True, append_images=rest, quality=70)
    print(f"wrote {HERE / 'sample-scan.pdf'}")


if __name__ == "__main__":
    main()
