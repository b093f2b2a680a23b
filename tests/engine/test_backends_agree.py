"""vLLM and transformers agree on the tiny model: same prompt token ids, same greedy tokens (float32)."""

from __future__ import annotations

import pytest

from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text, Video
from tests.helpers import make_image

pytestmark = [pytest.mark.engine, pytest.mark.transformers]


def _requests() -> list[ChatRequest]:
    opts = SamplingOptions(max_tokens=16)
    return [
        ChatRequest([Message("user", "Describe the chart in one line.")], opts),
        ChatRequest(
            [Message("user", [Image(make_image(640, 480, 1), max_pixels=256 * 784), Text("What is it?")])], opts
        ),
        ChatRequest(
            [
                Message("system", "You read invoices."),
                Message("user", [Image(make_image(300, 900, 2)), Image(make_image(1200, 200, 3)), Text("Total?")]),
            ],
            opts,
        ),
        ChatRequest([Message("user", [Video([make_image(84, 84, i) for i in range(6)], nframes=4), Text("?")])], opts),
    ]


def test_prompt_ids_and_greedy_tokens_match(vllm_engine, hf_engine) -> None:  # noqa: ANN001
    requests = _requests()
    from_vllm = vllm_engine.generate(requests)
    from_hf = [hf_engine.generate([r])[0] for r in requests]
    for v, h in zip(from_vllm, from_hf, strict=True):
        assert v.ok and h.ok, (v.error, h.error)
        assert v.prompt_token_ids == h.prompt_token_ids  # every image and video pad included
        assert v.usage.image_tokens == h.usage.image_tokens and v.usage.video_tokens == h.usage.video_tokens
        assert v.token_ids[:8] == h.token_ids[:8]
    matched = sum(v.token_ids == h.token_ids for v, h in zip(from_vllm, from_hf, strict=True))
    assert matched >= len(requests) - 1  # the full 16 tokens too, barring a float tie late in one answer


def test_transformers_stream_and_batch(hf_engine) -> None:  # noqa: ANN001
    requests = _requests()[:3]
    singles = [hf_engine.generate([r])[0] for r in requests]
    chunks = list(hf_engine.stream(requests[1]))
    assert len(chunks) >= 3
    assert "".join(c.text for c in chunks) == singles[1].text
    assert chunks[-1].usage == singles[1].usage
    batched = hf_engine.generate(requests)  # left-padded batch
    assert [b.prompt_token_ids for b in batched] == [s.prompt_token_ids for s in singles]
    assert [b.token_ids[:4] for b in batched] == [s.token_ids[:4] for s in singles]
