"""An agent that looks closer: a LlamaIndex FunctionAgent with a `look_at_region(page, bbox)` tool that crops a
region of a scanned page and asks Qwen2-VL about it.

    python cookbook/agent_look_at_region.py [--model ...] [--pdf scans.pdf] [--question "..."]

The box is on the 0-1000 grid of the page (Qwen2-VL's own convention), so the model can name a region it saw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from _shared import SAMPLE_SCAN, engine_for, parse_args
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from llama_index.llms.qwenvl import QwenVL
from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text
from qwenvl.layout import crop, open_document


class Region(BaseModel):
    """A region of a page: page number and box on the 0-1000 grid."""

    page: int = Field(ge=1, le=999, description="1-based page number")
    x0: int = Field(ge=0, le=1000)
    y0: int = Field(ge=0, le=1000)
    x1: int = Field(ge=0, le=1000)
    y1: int = Field(ge=0, le=1000)


def main(argv: Sequence[str] | None = None, engine: Any = None) -> dict[str, Any]:
    def extra(p: Any) -> None:
        p.add_argument("--pdf", default=str(SAMPLE_SCAN))
        p.add_argument("--question", default="Look at the top of page 2: what is the heading there?")

    args = parse_args(__doc__.splitlines()[0], argv, extra)
    engine, owned = engine_for(args, engine)
    looked: list[dict[str, int]] = []
    document = open_document(args.pdf)

    def look_at_region(page: int, x0: int, y0: int, x1: int, y1: int) -> str:
        """Describe what is written in a region of a page (box on the 0-1000 grid)."""
        page = min(max(page, 1), document.page_count)
        image = next(p for p in document.pages() if p.number == page).render(150)[0]
        w, h = image.size
        box = (min(x0, x1) * w / 1000, min(y0, y1) * h / 1000, max(x0, x1) * w / 1000, max(y0, y1) * h / 1000)
        if box[2] - box[0] < 8 or box[3] - box[1] < 8:
            box = (0, 0, w, h)  # too small to read: the whole page
        looked.append({"page": page, "x0": x0, "y0": y0, "x1": x1, "y1": y1})
        (result,) = engine.generate(
            [
                ChatRequest(
                    [
                        Message(
                            "user", [Image(crop(image, box), max_pixels=256 * 28 * 28), Text("Transcribe this region.")]
                        )
                    ],
                    SamplingOptions(max_tokens=64),
                )
            ]
        )
        return result.text if result.error is None else f"error: {result.error}"

    try:
        agent = FunctionAgent(
            tools=[FunctionTool.from_defaults(look_at_region, fn_schema=Region)],
            llm=QwenVL(engine=engine, max_tokens=120, temperature=0.7),
            system_prompt="You answer questions about a scanned document. Use look_at_region to read regions.",
            initial_tool_choice="required",  # look before answering
        )

        async def ask() -> Any:
            return await agent.run(args.question, max_iterations=4)

        result = asyncio.run(ask())
        print(str(result))
        print(f"regions looked at: {looked}")
        return {"answer": str(result), "looked": looked}
    finally:
        document.close()
        if owned:
            engine.close()


if __name__ == "__main__":
    main()
