"""Chart question answering: a bar chart image, a question, and the bars the answer points at as boxes.

    python cookbook/chart_qa.py [--model ...] [--image chart.png] [--question "..."]

The model answers about the chart and, asked to, outlines bars in its family's convention (Qwen2-VL
<|box_start|> boxes and Qwen3-VL bbox_2d on a 0-1000 grid, Qwen2.5-VL bbox_2d in pixels of the image it saw);
`qwenvl.grounding.parse_boxes(..., profile=engine.profile)` maps them to image pixels and `draw_boxes` draws them
(chart-boxes.png).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
from _shared import engine_for, parse_args

from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text
from qwenvl.grounding import draw_boxes, parse_boxes
from qwenvl_testkit.synthetic_pages import find_font


def bar_chart(values: dict[str, float], size: tuple[int, int] = (800, 500)) -> PIL.Image.Image:
    """A labelled bar chart of ``values``."""
    image = PIL.Image.new("RGB", size, "white")
    draw = PIL.ImageDraw.Draw(image)
    font = PIL.ImageFont.truetype(find_font("sans"), 22)
    top = max(values.values())
    width = (size[0] - 100) / len(values)
    for i, (label, value) in enumerate(values.items()):
        x0 = 60 + i * width + 15
        y0 = size[1] - 60 - (size[1] - 120) * value / top
        draw.rectangle((x0, y0, x0 + width - 30, size[1] - 60), fill=(60, 110, 200))
        draw.text((x0, size[1] - 50), label, fill="black", font=font)
        draw.text((x0, y0 - 28), f"{value:g}", fill="black", font=font)
    draw.line((50, size[1] - 60, size[0] - 20, size[1] - 60), fill="black", width=2)
    return image


def main(argv: Sequence[str] | None = None, engine: Any = None) -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--image", help="a chart image (default: a drawn bar chart)")
        p.add_argument("--question", default="Which quarter had the highest revenue? Outline that bar.")
        p.add_argument("--out", default="chart-boxes.png")

    args = parse_args(__doc__.splitlines()[0], argv, extra)
    chart = (
        PIL.Image.open(args.image).convert("RGB")
        if args.image
        else bar_chart({"Q1": 12.5, "Q2": 18.0, "Q3": 9.5, "Q4": 15.0})
    )
    engine, owned = engine_for(args, engine)
    try:
        (result,) = engine.generate(
            [
                ChatRequest(
                    [Message("user", [Image(chart, max_pixels=512 * 28 * 28), Text(args.question)])],
                    SamplingOptions(max_tokens=128),
                )
            ]
        )
        if result.error is not None:
            raise result.error
        profile = getattr(engine, "profile", None)  # the engine's family says how its boxes are written
        boxes = parse_boxes(result.text, chart.size, max_pixels=512 * 28 * 28, profile=profile)
        print(result.text)
        print(f"{len(boxes)} box(es) in image pixels: {[tuple(round(v) for v in b.xyxy) for b in boxes]}")
        print(f"[{result.usage.image_tokens} image tokens of {result.usage.prompt_tokens} prompt tokens]")
        draw_boxes(chart, boxes).save(args.out)
        return {"text": result.text, "boxes": boxes, "usage": result.usage}
    finally:
        if owned:
            engine.close()


if __name__ == "__main__":
    main()
