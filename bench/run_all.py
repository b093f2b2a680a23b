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


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _replace(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name}:start -->\n).*?(<!-- bench:{name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no <!-- bench:{name}:start/end --> markers")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def _merge_rows(text: str, rows: list[tuple[str, ...]]) -> str:
    """The README's engine table with ``rows`` in place of the rows of the same name (new names go last)."""
    match = re.search(r"<!-- bench:engine:start -->\n(.*?)<!-- bench:engine:end -->", text, re.S)
    if match is None:
        raise SystemExit("README.md has no <!-- bench:engine:start/end --> markers")
    lines = match.group(1).rstrip("\n").split("\n")
    new = {row[0]: "| " + " | ".join(row) + " |" for row in rows}
    kept = []
    for line in lines:
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
