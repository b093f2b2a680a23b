"""What changed between two screenshots: two images in one LlamaIndex chat message.

    python cookbook/screenshot_diff.py [--model ...] [--before a.png --after b.png]

Each image keeps its own pixel budget; the answer streams as it is generated.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import PIL.Image
import PIL.ImageDraw
import PIL.ImageFont
from _shared import engine_for, parse_args
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock

from llama_index.llms.qwenvl import QwenVL
from qwenvl_testkit.synthetic_pages import find_font


def screenshot(status: str, color: tuple[int, int, int], items: int) -> PIL.Image.Image:
    """A small settings-page screenshot."""
    image = PIL.Image.new("RGB", (900, 560), (245, 246, 250))
    draw = PIL.ImageDraw.Draw(image)
    font = PIL.ImageFont.truetype(find_font("sans"), 24)
    draw.rectangle((0, 0, 900, 70), fill=(40, 44, 52))
    draw.text((24, 20), "Billing settings", fill="white", font=font)
    for i in range(items):
        draw.rectangle((40, 110 + 70 * i, 860, 160 + 70 * i), outline=(200, 200, 210), fill="white")
        draw.text((60, 122 + 70 * i), f"Invoice #{1040 + i}", fill="black", font=font)
    draw.rounded_rectangle((600, 480, 860, 530), radius=10, fill=color)
    draw.text((625, 490), status, fill="white", font=font)
    return image


def _png(image: PIL.Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def main(argv: Sequence[str] | None = None, engine: Any = None) -> str:
    def extra(p: Any) -> None:
        p.add_argument("--before", help="the first screenshot")
        p.add_argument("--after", help="the second screenshot")

    args = parse_args(__doc__.splitlines()[0], argv, extra)
    before = open(args.before, "rb").read() if args.before else _png(screenshot("Save", (40, 120, 220), 4))
    after = open(args.after, "rb").read() if args.after else _png(screenshot("Saved", (40, 160, 80), 5))
    engine, owned = engine_for(args, engine)
    try:
        llm = QwenVL(engine=engine, max_tokens=160)
        message = ChatMessage(
            role="user",
            blocks=[
                TextBlock(text="Screenshot before:"),
                ImageBlock(image=before, image_mimetype="image/png"),
                TextBlock(text="Screenshot after:"),
                ImageBlock(image=after, image_mimetype="image/png"),
                TextBlock(text="List what changed between the two screenshots."),
            ],
        )
        text = ""
        for delta in llm.stream_chat([message]):
            print(delta.delta or "", end="", flush=True)
            text = delta.message.content or ""
        print()
        return text
    finally:
        if owned:
            engine.close()


if __name__ == "__main__":
    main()
