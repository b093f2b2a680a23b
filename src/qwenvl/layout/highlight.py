"""Citations on the page: highlighted regions and crops of page images."""

from __future__ import annotations

from collections.abc import Sequence

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont

from qwenvl.errors import LayoutError
from qwenvl.layout.model import BBox

__all__ = ["crop", "highlight"]

BoxLike = BBox | tuple[float, float, float, float]


def _xyxy(box: BoxLike) -> tuple[float, float, float, float]:
    return box.xyxy if isinstance(box, BBox) else (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


def highlight(
    page_image: PIL.Image.Image,
    bboxes: Sequence[BoxLike],
    *,
    color: tuple[int, int, int] = (255, 200, 0),
    opacity: float = 0.35,
    outline: int = 3,
    labels: Sequence[str] | None = None,
) -> PIL.Image.Image:
    """A copy of ``page_image`` with each box filled translucently, outlined and optionally labelled."""
    base = page_image.convert("RGBA")
    layer = PIL.Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = PIL.ImageDraw.Draw(layer)
    size = max(12, base.height // 80)
    font = PIL.ImageFont.load_default(size=size)
    fill = (*color, round(255 * opacity))
    edge = (*(max(0, v - 90) for v in color), 255)
    for k, box in enumerate(bboxes):
        xyxy = _xyxy(box)
        draw.rectangle(xyxy, fill=fill, outline=edge, width=outline)
        if labels is not None and k < len(labels):
            draw.text((xyxy[0] + outline, max(0.0, xyxy[1] - size - 2)), labels[k], fill=edge, font=font)
    return PIL.Image.alpha_composite(base, layer).convert("RGB")


def crop(page_image: PIL.Image.Image, bbox: BoxLike, *, padding: float = 8.0) -> PIL.Image.Image:
    """The region ``bbox`` of ``page_image`` with ``padding`` pixels around it, kept inside the image."""
    x0, y0, x1, y1 = _xyxy(bbox)
    w, h = page_image.size
    box = (
        max(0, int(x0 - padding)),
        max(0, int(y0 - padding)),
        min(w, int(x1 + padding + 0.5)),
        min(h, int(y1 + padding + 0.5)),
    )
    if box[2] <= box[0] or box[3] <= box[1]:
        raise LayoutError(f"bbox {bbox} is empty or outside the {w}x{h} page image")
    return page_image.crop(box)
