"""A video summary: frames sampled as qwen-vl-utils does, the video's token cost known before it runs.

    python cookbook/video_summary.py [--model ...] [--video clip.mp4]

Without --video, a short clip of a moving square is drawn in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import PIL.ImageDraw
from _shared import engine_for, parse_args

from qwenvl import ChatRequest, Message, SamplingOptions, Text, Video


def moving_square(frames: int = 16, size: tuple[int, int] = (320, 240)) -> list[PIL.Image.Image]:
    """A red square crossing a grey background, left to right."""
    out = []
    for i in range(frames):
        image = PIL.Image.new("RGB", size, (200, 200, 200))
        x = 10 + i * (size[0] - 80) // max(1, frames - 1)
        PIL.ImageDraw.Draw(image).rectangle((x, 90, x + 60, 150), fill=(220, 30, 30))
        out.append(image)
    return out


def main(argv: Sequence[str] | None = None, engine: Any = None) -> dict[str, Any]:
    args = parse_args(__doc__.splitlines()[0], argv, lambda p: p.add_argument("--video", help="a video file"))
    video = (
        Video(args.video, fps=1.0, max_pixels=128 * 28 * 28)
        if args.video
        else Video(moving_square(), nframes=8, sample_fps=4.0, max_pixels=64 * 28 * 28)
    )
    request = ChatRequest(
        [Message("user", [video, Text("Summarize what happens in this video.")])], SamplingOptions(max_tokens=96)
    )
    engine, owned = engine_for(args, engine)
    try:
        cost = engine.count_tokens(request)
        print(f"[the video costs {cost.video_tokens} tokens; the prompt {cost.prompt_tokens}]")
        text = ""
        for chunk in engine.stream(request):
            print(chunk.text, end="", flush=True)
            text += chunk.text
        print()
        return {"text": text, "video_tokens": cost.video_tokens}
    finally:
        if owned:
            engine.close()


if __name__ == "__main__":
    main()
