"""Runs every benchmark and rewrites the README's performance tables from their results.

    python bench/run_all.py            # all benchmarks, then README.md between the bench markers
    python bench/run_all.py --dry-run  # print the tables, leave README.md alone
    python bench/run_all.py --only server_vs_local  # rerun some benchmarks: their rows replace theirs

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


def _row(cells: tuple[str, ...]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    return "\n".join([_row(header), "|" + " --- |" * len(header), *map(_row, rows)])


def _section(text: str, name: str) -> re.Match[str]:
    """The README's ``name`` section between its bench markers: groups start marker, body, end marker."""
    match = re.search(rf"(<!-- bench:{name}:start -->\n)(.*?)(<!-- bench:{name}:end -->)", text, re.S)
    if match is None:
        raise SystemExit(f"README.md has no <!-- bench:{name}:start/end --> markers")
    return match


def _replace(text: str, name: str, body: str) -> str:
    match = _section(text, name)
    return text[: match.start(2)] + body + "\n" + text[match.end(2) :]


def _merge_rows(text: str, rows: list[tuple[str, ...]]) -> str:
    """The README's engine table with ``rows`` in place of the rows of the same name (new names go last)."""
    new = {row[0]: _row(row) for row in rows}
    kept = []
    for line in _section(text, "engine").group(2).rstrip("\n").split("\n"):
        name = line.split(" | ", 1)[0].removeprefix("| ") if line.startswith("| ") else None
        kept.append(new.pop(name) if name in new else line)
    return _replace(text, "engine", "\n".join(kept + list(new.values())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument(
        "--only",
        nargs="+",
        choices=["engine_overhead", "server_vs_local", "langchain_batch", "ray_ingest", "loader"],
        help="run these benchmarks only; their rows replace theirs in the README's tables, the others stay",
    )
    args = ap.parse_args()
    import engine_overhead
    import langchain_batch
    import loader
    import ray_ingest
    import server_vs_local

    machine = f"{os.cpu_count()}-core {platform.machine()} CPU, tiny model"
    engine_rows: list[tuple[str, ...]] = []
    for module in (engine_overhead, server_vs_local, langchain_batch, ray_ingest):
        if args.only and module.__name__ not in args.only:
            continue
        print(f"== {module.__name__}", flush=True)
        # the README's paragraphs name these settings: the per-family engine rows at 96 prompts, 5 rounds; the
        # server rows at 7 interleaved rounds (a batch there takes about 2 s, and this machine's noise is larger)
        argv = {
            engine_overhead: ["--family", "all", "--prompts", "96", "--rounds", "5"],
            server_vs_local: ["--rounds", "7"],
        }.get(module, [])
        engine_rows += module.main(argv)
    loader_rows: list[tuple[str, ...]] = []
    if not args.only or "loader" in args.only:
        print("== loader", flush=True)
        loader_rows = loader.main([])
    engine_table = f"Measured on a {machine} (`python bench/run_all.py`):\n\n" + _table(
        ("benchmark", "result"), engine_rows
    )
    loader_table = _table(("backend", "pages/s", "CER", "vs `pytesseract.image_to_string`"), loader_rows)
    print(engine_table, loader_table, sep="\n\n")
    if not args.dry_run:
        text = README.read_text()
        text = _merge_rows(text, engine_rows) if args.only else _replace(text, "engine", engine_table)
        if any(row[0].startswith("baseline") for row in loader_rows):
            text = _replace(text, "loader", loader_table)
        elif loader_rows:  # its ratios are to the baseline: a table without it would lose them
            print("the loader table is left as it is: no `tesseract` program here for its baseline")
        README.write_text(text)
        print(f"updated {README}")


if __name__ == "__main__":
    main()
