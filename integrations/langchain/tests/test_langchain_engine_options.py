"""ChatQwenVL's engine settings: pixel limits and timeout apply per request whatever the engine; settings that
configure a new engine raise with engine= or when the engine it would build does not take them."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage

from langchain_qwenvl import ChatQwenVL
from tests.helpers import RecordingEngine


def _message() -> list[HumanMessage]:
    image = {"type": "image", "image": "data:image/png;base64,AAAA"}
    return [HumanMessage(content=[image, {"type": "image", "image": "x.png", "max_pixels": 9999}, "?"])]


def test_pixel_limits_and_timeout_apply_per_request_with_a_given_engine() -> None:
    engine = RecordingEngine()
    chat = ChatQwenVL(engine=engine, min_pixels=3136, max_pixels=200_704, timeout=12.5)
    chat.invoke(_message())
    [request] = engine.requests
    assert [(i.min_pixels, i.max_pixels) for i in request.images()] == [(3136, 200_704), (3136, 9999)]
    assert request.timeout == 12.5
    chat.invoke(_message(), timeout=2.0)
    assert engine.requests[-1].timeout == 2.0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"max_retries": 3}, "max_retries"),
        ({"base_url": "http://127.0.0.1:1/v1"}, "base_url"),
        ({"model_kwargs": {"gpu_memory_utilization": 0.3}}, "gpu_memory_utilization"),
    ],
)
def test_engine_settings_with_a_given_engine_raise(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ChatQwenVL(engine=RecordingEngine(), **kwargs)


def test_settings_the_built_engine_does_not_take_raise() -> None:
    with pytest.raises(ValueError, match="max_retries"):
        ChatQwenVL(model="Qwen/Qwen2-VL-2B-Instruct", max_retries=3)  # in-process: nothing to retry
    with pytest.raises(ValueError, match="nonsense"):
        ChatQwenVL(model="Qwen/Qwen2-VL-2B-Instruct", model_kwargs={"nonsense": 1})
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        ChatQwenVL(model="m", base_url="http://h/v1", model_kwargs={"gpu_memory_utilization": 0.3})
    server = ChatQwenVL(model="m", base_url="http://h/v1", max_retries=5, timeout=30)
    assert server._engine_options()["max_retries"] == 5 and server._engine_options()["timeout"] == 30
    local = ChatQwenVL(model="m", timeout=30, model_kwargs={"gpu_memory_utilization": 0.3, "seed": 1})
    assert "timeout" not in local._engine_options() and "seed" not in local._engine_options()
