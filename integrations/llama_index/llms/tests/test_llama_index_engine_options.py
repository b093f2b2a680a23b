"""QwenVL's engine settings: pixel limits and timeout apply per request whatever the engine, as in ChatQwenVL;
settings that configure a new engine raise with engine= or when the engine it would build does not take them."""

from __future__ import annotations

import pytest
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock

from llama_index.llms.qwenvl import QwenVL
from qwenvl.errors import RequestError
from tests.helpers import RecordingEngine, make_image, png_bytes


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
    [({"max_retries": 3}, "max_retries"), ({"engine_kwargs": {"dtype": "float32"}}, "dtype")],
)
def test_engine_settings_with_a_given_engine_raise(kwargs: dict, words: str) -> None:
    with pytest.raises(RequestError, match=words):
        QwenVL(engine=RecordingEngine(), **kwargs)


def test_settings_the_built_engine_does_not_take_raise() -> None:
    with pytest.raises(RequestError, match="max_retries"):
        QwenVL(model="Qwen/Qwen2-VL-2B-Instruct", max_retries=3)
    with pytest.raises(RequestError, match="nonsense"):
        QwenVL(model="Qwen/Qwen2-VL-2B-Instruct", engine_kwargs={"nonsense": 1})
    assert QwenVL(model="m", base_url="http://h/v1", max_retries=5)._engine_options()["max_retries"] == 5
