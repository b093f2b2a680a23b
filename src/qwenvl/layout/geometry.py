"""Boxes on a page image (``(x0, y0, x1, y1)`` in pixels, y down), and the direction a line of them reads in."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

__all__ = ["Box", "center", "inside", "overlap", "right_to_left", "union"]

Box = tuple[float, float, float, float]


def union(boxes: Sequence[Box]) -> Box:
    """The smallest box holding all ``boxes`` (at least one)."""
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def center(box: Box) -> tuple[float, float]:
    """The box's centre point."""
    return ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)


def inside(point: tuple[float, float], box: Box, pad: float = 0.0) -> bool:
    """Whether ``point`` lies in ``box`` grown by ``pad`` on every side."""
    return box[0] - pad <= point[0] <= box[2] + pad and box[1] - pad <= point[1] <= box[3] + pad


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """The length two intervals share (0 when they are apart)."""
    return max(0.0, min(a1, b1) - max(a0, b0))


def right_to_left(words: Sequence[str]) -> bool:
    """Whether a line of ``words`` reads right to left: more of its letters are of a right-to-left script
    (Arabic, Hebrew, ...) than of a left-to-right one."""
    rtl = ltr = 0
    for word in words:
        for ch in word:
            kind = unicodedata.bidirectional(ch)
            if kind in ("R", "AL"):
                rtl += 1
            elif kind == "L":
                ltr += 1
    return rtl > ltr
