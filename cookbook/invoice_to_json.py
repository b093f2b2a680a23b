"""Invoice image to JSON with a pydantic schema, through LangChain's `with_structured_output`.

    python cookbook/invoice_to_json.py [--model Qwen/Qwen2.5-VL-3B-Instruct] [--image invoice.png]

The answer is decoded under the schema, so it always parses into `Invoice` (with a real model, the values are
read off the image; with the tiny test model they are noise of the right shape).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from _shared import engine_for, parse_args
from langchain_core.messages import HumanMessage
from pydantic import BaseModel, Field

from langchain_qwenvl import ChatQwenVL
from qwenvl_testkit.synthetic_pages import make_page


class LineItem(BaseModel):
    """One row of the invoice."""

    description: str = Field(max_length=40, description="What was sold")
    quantity: int = Field(ge=0, le=9999)
    unit_price: float = Field(ge=0, le=99999)


class Invoice(BaseModel):
    """The fields an accounts-payable system needs."""

    vendor: str = Field(max_length=60)
    currency: str = Field(pattern="^[A-Z]{3}$", description="ISO 4217 code, e.g. EUR")
    items: list[LineItem] = Field(max_length=10)
    total: float = Field(ge=0, le=999999)


def main(argv: Sequence[str] | None = None, engine: Any = None) -> Invoice:
    args = parse_args(__doc__.splitlines()[0], argv, lambda p: p.add_argument("--image", help="an invoice image"))
    if args.image:
        with open(args.image, "rb") as fh:
            data = fh.read()
    else:  # a synthetic page with a priced table stands in for an invoice
        buf = io.BytesIO()
        make_page("table", seed=3).image.save(buf, "PNG")
        data = buf.getvalue()
    engine, owned = engine_for(args, engine)
    try:
        chat = ChatQwenVL(engine=engine, max_tokens=400, temperature=0.0)
        extract = chat.with_structured_output(Invoice)
        message = HumanMessage(
            content=[
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()},
                    "max_pixels": 768 * 28 * 28,
                },
                {"type": "text", "text": "Extract the invoice as JSON: vendor, currency, line items and total."},
            ]
        )
        invoice = extract.invoke([message])
        print(invoice.model_dump_json(indent=2))
        return invoice
    finally:
        if owned:
            engine.close()


if __name__ == "__main__":
    main()
