"""VLLMEngine through the real vLLM (CPU build) on the tiny Qwen2-VL."""

from __future__ import annotations

import asyncio
import time

import pytest

from qwenvl import ChatRequest, Image, Message, SamplingOptions, Text, Video
from qwenvl.errors import ContextOverflowError, EngineClosedError, MediaDecodeError, RequestError
from qwenvl.messages import ChatResult
from tests.helpers import make_image, png_bytes

pytestmark = pytest.mark.engine

GREEDY = SamplingOptions(max_tokens=12)


def _image_request(i: int, max_tokens: int = 12) -> ChatRequest:
    w, h = 200 + 37 * i, 150 + 23 * i
    return ChatRequest(
        [Message("user", [Image(make_image(w, h, seed=i), max_pixels=(16 + 8 * i) * 784), Text(f"item {i}")])],
        SamplingOptions(max_tokens=max_tokens),
        request_id=f"req-{i}",
    )


def _resized_tokens(request: ChatRequest) -> int:
    from qwenvl.budget import smart_resize

    total = 0
    for img in request.images():
        w, h = img.source.size  # type: ignore[union-attr]
        rh, rw = smart_resize(h, w, img.min_pixels or 4 * 784, img.max_pixels)
        total += (rh // 28) * (rw // 28)
    return total


def test_batch_of_16_in_order_with_image_tokens_and_one_corrupt(vllm_engine) -> None:  # noqa: ANN001
    requests = [_image_request(i) for i in range(16)]
    corrupt = ChatRequest([Message("user", [Image(png_bytes(make_image(40, 40))[:60]), Text("x")])], request_id="bad")
    batch = requests[:7] + [corrupt] + requests[7:]
    results = vllm_engine.generate(batch)
    assert len(results) == 17
    assert [r.request_id for r in results] == [r.request_id for r in batch]
    bad = results[7]
    assert not bad.ok and isinstance(bad.error, MediaDecodeError) and bad.text == ""
    expected = [_resized_tokens(r) for r in requests]
    assert len(set(expected)) > 8  # really different budgets
    good = results[:7] + results[8:]
    for request, result, tokens in zip(requests, good, expected, strict=True):
        assert result.ok, result.error
        assert result.usage.image_tokens == tokens
        assert result.usage.completion_tokens == len(result.token_ids or []) > 0
        assert result.finish_reason in ("stop", "length")
        # the count known before running equals what vLLM processed
        assert vllm_engine.count_tokens(request).prompt_tokens == result.usage.prompt_tokens


def test_batched_equals_single(vllm_engine) -> None:  # noqa: ANN001
    requests = [_image_request(i) for i in range(4)]
    batched = vllm_engine.generate(requests)
    singles = [vllm_engine.generate([r])[0] for r in requests]
    assert [r.token_ids for r in batched] == [r.token_ids for r in singles]


def test_stream_concatenation_equals_greedy_text(vllm_engine) -> None:  # noqa: ANN001
    request = _image_request(2, max_tokens=24)
    full = vllm_engine.generate([request])[0]
    chunks = list(vllm_engine.stream(request))
    assert len(chunks) >= 3
    assert "".join(c.text for c in chunks) == full.text
    assert [t for c in chunks for t in c.token_ids] == full.token_ids
    assert chunks[-1].finish_reason == full.finish_reason and chunks[-1].usage == full.usage
    assert all(c.usage is None for c in chunks[:-1])


async def test_astream_equals_agenerate_and_cancels(vllm_engine) -> None:  # noqa: ANN001
    request = _image_request(3, max_tokens=24)
    [full] = await vllm_engine.agenerate([request])
    chunks = [c async for c in vllm_engine.astream(request)]
    assert "".join(c.text for c in chunks) == full.text and len(chunks) >= 3
    # stop reading early: the request is aborted in vLLM, nothing is left running
    long = ChatRequest(request.messages, SamplingOptions(max_tokens=2000))
    stream = vllm_engine.astream(long)
    async for _ in stream:
        break
    await stream.aclose()
    for _ in range(50):
        if vllm_engine.unfinished_requests() == 0:
            break
        await asyncio.sleep(0.1)
    assert vllm_engine.unfinished_requests() == 0


async def test_async_calls_overlap(vllm_engine) -> None:  # noqa: ANN001
    requests = [_image_request(i, max_tokens=64) for i in range(4)]
    start = time.perf_counter()
    first = await vllm_engine.agenerate(requests[:1])
    one = time.perf_counter() - start
    results = await asyncio.gather(*(vllm_engine.agenerate([r]) for r in requests))
    assert all(r[0].ok for r in results)
    assert results[0][0].token_ids == first[0].token_ids
    # not a timing assertion on speed: just that 4 concurrent calls all completed through one engine
    assert one > 0


def test_sampling_options(vllm_engine) -> None:  # noqa: ANN001
    base = _image_request(1, max_tokens=6)
    [short] = vllm_engine.generate([base])
    assert short.finish_reason == "length" and short.usage.completion_tokens == 6
    seeded = ChatRequest(base.messages, SamplingOptions(max_tokens=16, temperature=1.0, seed=7))
    a, b = vllm_engine.generate([seeded, seeded])
    assert a.token_ids == b.token_ids  # same seed, same sample
    # a stop string taken from the greedy answer ends the answer before it
    [long] = vllm_engine.generate([ChatRequest(base.messages, SamplingOptions(max_tokens=24))])
    stop = next((long.text[i : i + 2] for i in range(4, len(long.text) - 2) if long.text[i : i + 2].isalpha()), None)
    if stop is not None:
        [stopped] = vllm_engine.generate([ChatRequest(base.messages, SamplingOptions(max_tokens=24, stop=[stop]))])
        assert stopped.finish_reason == "stop" and stop not in stopped.text
        assert long.text.startswith(stopped.text)


def test_video_from_frames(vllm_engine) -> None:  # noqa: ANN001
    frames = [make_image(112, 84, seed=i) for i in range(8)]
    request = ChatRequest([Message("user", [Video(frames, nframes=4, max_pixels=4 * 3 * 784), Text("what?")])], GREEDY)
    predicted = vllm_engine.count_tokens(request)
    [result] = vllm_engine.generate([request])
    assert result.ok, result.error
    assert result.usage.video_tokens == predicted.video_tokens == 2 * 3 * 4
    assert result.usage.prompt_tokens == predicted.prompt_tokens


def test_too_many_images_and_context_overflow_fail_alone(vllm_engine) -> None:  # noqa: ANN001
    many = ChatRequest([Message("user", [Image(make_image(50, 50, seed=i)) for i in range(5)])], GREEDY)
    huge_text = ChatRequest([Message("user", "word " * 5000)], GREEDY)
    ok = _image_request(0)
    results = vllm_engine.generate([many, huge_text, ok])
    assert isinstance(results[0].error, RequestError) and "limit_images" in str(results[0].error)
    assert isinstance(results[1].error, ContextOverflowError)
    assert results[2].ok


def test_large_images_are_shrunk_to_fit(vllm_engine) -> None:  # noqa: ANN001
    big = [Image(make_image(3000, 2200, seed=i), max_pixels=16384 * 784) for i in range(3)]
    request = ChatRequest([Message("user", [*big, Text("compare")])], SamplingOptions(max_tokens=50))
    [result] = vllm_engine.generate([request])
    assert result.ok, result.error
    assert result.usage.prompt_tokens + 50 <= vllm_engine.max_model_len
    assert result.usage.image_tokens > 0.8 * (vllm_engine.max_model_len - 50 - 40)


def test_streaming_a_bad_request_raises(vllm_engine) -> None:  # noqa: ANN001
    bad = ChatRequest([Message("user", [Image(b"nope")])])
    with pytest.raises(RequestError):
        list(vllm_engine.stream(bad))


def test_result_type(vllm_engine) -> None:  # noqa: ANN001
    [result] = vllm_engine.generate([_image_request(5)])
    assert isinstance(result, ChatResult) and result.raise_for_error() is result


def test_closed_transformers_engine_refuses(tiny_model) -> None:  # noqa: ANN001
    from qwenvl import TransformersEngine

    engine = TransformersEngine(tiny_model, dtype="float32")
    engine.close()
    with pytest.raises(EngineClosedError):
        engine.generate([_image_request(0)])


def test_cpu_engine_with_a_given_kv_cache_skips_the_encoder_profiling(vllm_engine) -> None:  # noqa: ANN001
    """The session engine runs on the CPU with VLLM_CPU_KVCACHE_SPACE set (root conftest): vLLM's start-up run of
    the vision encoder measures nothing there, so it is skipped, and images still cost their planned tokens."""
    config = vllm_engine._llm.llm_engine.model_config.multimodal_config
    assert config.skip_mm_profiling is True
    request = ChatRequest(
        [Message("user", [Image(make_image(1200, 900, 7)), Text("?")])], SamplingOptions(max_tokens=2)
    )
    [result] = vllm_engine.generate([request])
    planned = vllm_engine.count_tokens(request).image_tokens
    assert planned > 1000 and result.ok and result.usage.image_tokens == planned
