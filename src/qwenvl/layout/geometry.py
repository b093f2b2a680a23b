"""Boxes on a page image: ``(x0, y0, x1, y1)`` in pixels, y down."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["Box", "center", "inside", "overlap", "union"]

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
