"""`BBox`: the one box type, in pixels of an image, origin top-left."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["BBox"]


class BBox(BaseModel):
    """A box in pixels of an image (a rendered page, a photo), origin top-left, x0 <= x1 and y0 <= y1.

    The one box type of qwenvl: layout blocks and grounding boxes (`qwenvl.grounding.GroundedBox`) are both
    BBoxes; `clip`, `scale` and `shift` keep the subclass and its extra fields."""

    model_config = ConfigDict(frozen=True)

    x0: float = Field(description="Left edge, pixels from the image's left")
    y0: float = Field(description="Top edge, pixels from the image's top")
    x1: float = Field(description="Right edge")
    y1: float = Field(description="Bottom edge")

    @classmethod
    def of(cls, x0: float, y0: float, x1: float, y1: float) -> BBox:
        """A box from any two corners (swapped into order)."""
        return cls(x0=min(x0, x1), y0=min(y0, y1), x1=max(x0, x1), y1=max(y0, y1))

    @property
    def width(self) -> float:
        """x1 - x0."""
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        """y1 - y0."""
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        """Width times height."""
        return max(0.0, self.width) * max(0.0, self.height)

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1)."""
        return (self.x0, self.y0, self.x1, self.y1)

    def iou(self, other: BBox) -> float:
        """Intersection over union with ``other`` (0 when disjoint)."""
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def union(self, other: BBox) -> BBox:
        """The smallest box holding both."""
        return BBox(
            x0=min(self.x0, other.x0), y0=min(self.y0, other.y0), x1=max(self.x1, other.x1), y1=max(self.y1, other.y1)
        )

    def clip(self, width: float, height: float) -> Self:
        """This box cut to a page of ``width`` x ``height``."""
        return self.model_copy(
            update={
                "x0": min(max(self.x0, 0.0), width),
                "y0": min(max(self.y0, 0.0), height),
                "x1": min(max(self.x1, 0.0), width),
                "y1": min(max(self.y1, 0.0), height),
            }
        )

    def scale(self, sx: float, sy: float | None = None) -> Self:
        """This box with x multiplied by ``sx`` and y by ``sy`` (default ``sx``)."""
        sy = sx if sy is None else sy
        return self.model_copy(update={"x0": self.x0 * sx, "y0": self.y0 * sy, "x1": self.x1 * sx, "y1": self.y1 * sy})

    def shift(self, dx: float, dy: float) -> Self:
        """This box moved by (dx, dy)."""
        return self.model_copy(update={"x0": self.x0 + dx, "y0": self.y0 + dy, "x1": self.x1 + dx, "y1": self.y1 + dy})

    def to_grid(self, width: float, height: float, grid: int = 1000) -> tuple[int, int, int, int]:
        """This box on Qwen2-VL's [0, grid) grid of a ``width`` x ``height`` page."""
        return (
            round(self.x0 * grid / width),
            round(self.y0 * grid / height),
            round(self.x1 * grid / width),
            round(self.y1 * grid / height),
        )

    def to_points(self, dpi: float) -> tuple[float, float, float, float]:
        """This box in PDF points (1/72 inch) from the top-left, for a page rendered at ``dpi``."""
        f = 72.0 / dpi
        return (self.x0 * f, self.y0 * f, self.x1 * f, self.y1 * f)
