"""Runs every benchmark and rewrites the README's performance tables from their results.

    python bench/run_all.py            # all benchmarks, then README.md between the bench markers
    python bench/run_all.py --dry-run  # print the tables, leave README.md alone

The tables go between `<!-- bench:engine:start -->` / `<!-- bench:engine:end -->` and
`<!-- bench:loader:start -->` / `<!-- bench:loader:end -->` in README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

README = Path(__file__).parents[1] / "README.md"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _replace(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name}:start -->\n).*?(<!-- bench:{name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- bench:{name}:start/end --> markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    import engine_overhead
    import langchain_batch
    import loader
    import ray_ingest
    import server_vs_local

    machine = f"{os.cpu_count()}-core {platform.machine()} CPU, tiny model"
    engine_rows: list[tuple[str, ...]] = []
    for module in (engine_overhead, server_vs_local, langchain_batch, ray_ingest):
        print(f"== {module.__name__}", flush=True)
        # the README's paragraphs name these settings: the per-family engine rows at 96 prompts, 5 rounds; the
        # server rows at 7 interleaved rounds (a batch there takes about 2 s, and this machine's noise is larger)
        argv = {
            engine_overhead: ["--family", "all", "--prompts", "96", "--rounds", "5"],
            server_vs_local: ["--rounds", "7"],
        }.get(module, [])
        engine_rows += module.main(argv)
    print("== loader", flush=True)
    loader_rows = loader.main([])
    engine_table = f"Measured on a {machine} (`python bench/run_all.py`):\n\n" + _table(
        ("benchmark", "result"), engine_rows
    )
    loader_table = _table(("backend", "pages/s", "CER", "vs `pytesseract.image_to_string`"), loader_rows)
    print(engine_table, loader_table, sep="\n\n")
    if not args.dry_run:
        text = _replace(README.read_text(), "engine", engine_table)
        if any(row[0].startswith("baseline") for row in loader_rows):
            text = _replace(text, "loader", loader_table)
        else:  # its ratios are to the baseline: a table without it would lose them
            print("the loader table is left as it is: no `tesseract` program here for its baseline")
        README.write_text(text)
        print(f"updated {README}")


if __name__ == "__main__":
    main()
