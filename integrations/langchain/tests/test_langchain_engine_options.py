"""ChatQwenVL's engine settings: pixel limits, timeout and max_retries apply whatever the engine; settings that
configure a new engine raise with engine= or when the engine it would build does not take them."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage

from langchain_qwenvl import ChatQwenVL
from qwenvl_testkit.helpers import DiesOnceEngine, RecordingEngine


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
        ({"base_url": "http://127.0.0.1:1/v1"}, "base_url"),
        ({"engine_kwargs": {"gpu_memory_utilization": 0.3}}, "gpu_memory_utilization"),
    ],
)
def test_engine_settings_with_a_given_engine_raise(kwargs: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        ChatQwenVL(engine=RecordingEngine(), **kwargs)


def test_settings_the_built_engine_does_not_take_raise() -> None:
    with pytest.raises(ValueError, match="nonsense"):
        ChatQwenVL(model="Qwen/Qwen2-VL-2B-Instruct", engine_kwargs={"nonsense": 1})
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        ChatQwenVL(model="m", base_url="http://h/v1", engine_kwargs={"gpu_memory_utilization": 0.3})
    with pytest.raises(ValueError, match="max_retries"):
        ChatQwenVL(model="m", max_retries=-1)
    local = ChatQwenVL(model="m", timeout=30, engine_kwargs={"gpu_memory_utilization": 0.3}, model_kwargs={"seed": 1})
    assert "timeout" not in local._engine_options() and "seed" not in local._engine_options()
    assert local._engine_options()["gpu_memory_utilization"] == 0.3


def test_engine_keys_in_model_kwargs_still_work_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="engine_kwargs"):
        legacy = ChatQwenVL(model="m", model_kwargs={"gpu_memory_utilization": 0.3, "seed": 1})
    assert legacy._engine_options()["gpu_memory_utilization"] == 0.3 and "seed" not in legacy._engine_options()


def test_max_retries_is_taken_by_every_engine() -> None:
    """LangChain's standard parameters (timeout, max_retries) on every engine: a server engine this model
    builds retries itself; an in-process engine or a given one is retried by the model."""
    server = ChatQwenVL(model="m", base_url="http://h/v1", max_retries=5, timeout=30)
    assert server._engine_options()["max_retries"] == 5 and server._engine_options()["timeout"] == 30
    assert server._retries == 0  # no second layer of retries over the engine's
    local = ChatQwenVL(model="Qwen/Qwen2-VL-2B-Instruct", timeout=60, max_retries=2)
    assert "max_retries" not in local._engine_options() and local._retries == 2
    assert ChatQwenVL(engine=RecordingEngine(), max_retries=2)._retries == 2


def test_max_retries_restarts_a_dead_engine_for_invoke_and_batch() -> None:
    from qwenvl.errors import EngineDeadError

    with pytest.raises(EngineDeadError):
        ChatQwenVL(engine=DiesOnceEngine()).invoke("hi")  # no retries: the failure is the caller's
    engine = DiesOnceEngine()
    chat = ChatQwenVL(engine=engine, max_retries=1)
    assert chat.invoke("hi").content == "ok" and engine.restarts == 1
    engine = DiesOnceEngine()
    chat = ChatQwenVL(engine=engine, max_retries=1)
    assert [m.content for m in chat.batch(["a", "b", "c"])] == ["ok"] * 3 and engine.restarts == 1
