"""QwenVL's engine settings, as ChatQwenVL's: pixel limits, timeout and max_retries apply whatever the engine;
settings that configure a new engine raise with engine= or when the engine it would build does not take them."""

from __future__ import annotations

import pytest
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock

from llama_index.llms.qwenvl import QwenVL
from qwenvl.errors import RequestError
from qwenvl_testkit.helpers import DiesOnceEngine, RecordingEngine, make_image, png_bytes


def test_pixel_limits_and_timeout_apply_per_request_with_a_given_engine() -> None:
    engine = RecordingEngine()
    llm = QwenVL(engine=engine, min_pixels=3136, max_pixels=200_704, timeout=12.5)
    message = ChatMessage(role="user", blocks=[ImageBlock(image=png_bytes(make_image(40, 30))), TextBlock(text="?")])
    llm.chat([message])
    [request] = engine.requests
    assert [(i.min_pixels, i.max_pixels) for i in request.images()] == [(3136, 200_704)]
    assert request.timeout == 12.5


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [({"base_url": "http://127.0.0.1:1/v1"}, "base_url"), ({"engine_kwargs": {"dtype": "float32"}}, "dtype")],
)
def test_engine_settings_with_a_given_engine_raise(kwargs: dict, words: str) -> None:
    with pytest.raises(RequestError, match=words):
        QwenVL(engine=RecordingEngine(), **kwargs)


def test_settings_the_built_engine_does_not_take_raise() -> None:
    with pytest.raises(RequestError, match="nonsense"):
        QwenVL(model="Qwen/Qwen2-VL-2B-Instruct", engine_kwargs={"nonsense": 1})
    server = QwenVL(model="m", base_url="http://h/v1", max_retries=5)
    assert server._engine_options()["max_retries"] == 5 and server._retries == 0  # the server engine retries
    assert QwenVL(model="Qwen/Qwen2-VL-2B-Instruct", max_retries=3)._retries == 3  # in-process: retried here
    assert QwenVL(engine=RecordingEngine(), max_retries=2)._retries == 2


def test_base_url_and_model_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWENVL_MODEL", "Qwen/Qwen2-VL-7B-Instruct")
    monkeypatch.setenv("QWENVL_BASE_URL", "http://127.0.0.1:8000/v1")
    llm = QwenVL()
    assert (llm.model, llm.base_url) == ("Qwen/Qwen2-VL-7B-Instruct", "http://127.0.0.1:8000/v1")
    assert "max_retries" in llm._engine_options()  # a server engine's options


def test_max_retries_restarts_a_dead_engine() -> None:
    from qwenvl.errors import EngineDeadError

    message = [ChatMessage(role="user", content="hi")]
    with pytest.raises(EngineDeadError):
        QwenVL(engine=DiesOnceEngine()).chat(message)
    engine = DiesOnceEngine()
    response = QwenVL(engine=engine, max_retries=1).chat(message)
    assert response.message.content == "ok" and engine.restarts == 1
    assert response.additional_kwargs["prompt_tokens"] == 1 and response.additional_kwargs["total_tokens"] == 2
