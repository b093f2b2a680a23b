"""LangChain's own standard test suites for ChatQwenVL; the integration suite runs the real vLLM engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_qwenvl import ChatQwenVL
from qwenvl_testkit.helpers import make_image, png_bytes

_SHARED: dict[str, Any] = {}


@pytest.fixture(autouse=True)
def _share_engine(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.cls is not None and issubclass(request.cls, TestChatQwenVLIntegration):
        _SHARED["engine"] = request.getfixturevalue(request.cls.engine_fixture)
    yield


@pytest.fixture(scope="module")
def qwen25_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An in-process vLLM engine on the tiny Qwen2.5-VL, for the suite's second run (this module only)."""
    from qwenvl import VLLMEngine
    from qwenvl.testing import build_tiny_model
    from qwenvl_testkit.helpers import EAGER, ENGINE_ARGS

    model = build_tiny_model(tmp_path_factory.mktemp("tiny-qwen25vl"), family="qwen2_5_vl")
    engine = VLLMEngine(model, gpu_memory_utilization=0.2, engine_kwargs=EAGER, **ENGINE_ARGS)
    yield engine
    engine.close()


@pytest.fixture(autouse=True)
def _offline_picture(request: pytest.FixtureRequest) -> Iterator[None]:
    """The image tests download a picture from the internet, which this machine cannot reach: the same
    bytes are served locally, for the test's own download and for image URL blocks alike. (The real HTTP
    fetch path is tested against a local server in tests/unit/test_media.py.)"""
    if not request.node.name.startswith(("test_image_inputs", "test_image_tool_message")):
        yield
        return
    png = png_bytes(make_image(640, 480, seed=5))
    with (
        mock.patch("httpx.get", return_value=mock.Mock(content=png, status_code=200)),
        mock.patch("qwenvl.media._fetch", return_value=png),
    ):
        yield


class TestChatQwenVLUnit(ChatModelUnitTests):
    """The unit suite as written (its standard parameters include timeout and max_retries), on the in-process
    engine ChatQwenVL builds on first use (the suite never starts it)."""

    @property
    def chat_model_class(self) -> type[ChatQwenVL]:
        return ChatQwenVL

    @property
    def chat_model_params(self) -> dict:
        return {"model": "Qwen/Qwen2-VL-2B-Instruct"}

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return (
            {"QWENVL_MODEL": "Qwen/Qwen2-VL-7B-Instruct", "QWENVL_BASE_URL": "http://127.0.0.1:8000/v1"},
            {},
            {"model": "Qwen/Qwen2-VL-7B-Instruct", "base_url": "http://127.0.0.1:8000/v1"},
        )

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return True


class TestChatQwenVLUnitServer(TestChatQwenVLUnit):
    """The same suite on a server configuration (the server engine starts on first use only)."""

    @property
    def chat_model_params(self) -> dict:
        return {"model": "Qwen/Qwen2-VL-2B-Instruct", "base_url": "http://127.0.0.1:8000/v1"}


class TestChatQwenVLIntegration(ChatModelIntegrationTests):
    #: the fixture of the engine the suite runs on
    engine_fixture = "vllm_engine"

    @property
    def chat_model_class(self) -> type[ChatQwenVL]:
        return ChatQwenVL

    @property
    def chat_model_params(self) -> dict:
        # Sampled (seeded): greedy decoding of random weights can loop inside a JSON string until max_tokens.
        return {"engine": _SHARED["engine"], "max_tokens": 400, "temperature": 1.0, "model_kwargs": {"seed": 7}}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def tool_choice_value(self) -> str:
        return "any"  # a random model calls tools only when made to

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return True

    @property
    def supports_image_urls(self) -> bool:
        return True

    @property
    def supports_image_tool_message(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {"invoke": [], "stream": []}

    # A random-weight model cannot pass the tests below: each needs the *content* of a real answer.
    _RANDOM = "the tiny test model has random weights: "

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    @pytest.mark.xfail(reason=_RANDOM + "the test wants the argument value 3 in the call", strict=False)
    def test_tool_calling(self, model: Any) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=_RANDOM + "the test wants the argument value 3 in the call", strict=False)
    async def test_tool_calling_async(self, model: Any) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=_RANDOM + "the test wants '你好' in the arguments", strict=False)
    def test_unicode_tool_call_integration(self, model: Any) -> None:
        super().test_unicode_tool_call_integration(model)

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    @pytest.mark.xfail(reason=_RANDOM + "with tool_choice auto it must decide to call the tool", strict=False)
    def test_agent_loop(self, model: Any) -> None:
        super().test_agent_loop(model)

    @pytest.mark.xfail(
        reason=_RANDOM + "it writes the unbounded integer arguments digit after digit until max_tokens", strict=False
    )
    def test_structured_few_shot_examples(self, model: Any, my_adder_tool: Any) -> None:
        super().test_structured_few_shot_examples(model, my_adder_tool)


class TestChatQwenVLIntegrationQwen25(TestChatQwenVLIntegration):
    """The same suite, with the same expectations, on the tiny Qwen2.5-VL: nothing in ChatQwenVL depends on the
    family."""

    engine_fixture = "qwen25_engine"

    @property
    def chat_model_params(self) -> dict:
        # The suite's schemas have unbounded strings, which a random model closes only when it happens to sample
        # a quote. This checkpoint's random logits are peakier than the Qwen2-VL one's: at temperature 1.0 a Joke
        # took 965 to over 2000 tokens (seeds 7, 1, 2, 3), at 2.0 (the highest the OpenAI API takes) 164 to 412,
        # as on Qwen2-VL at 1.0 (170 to 425). So it samples at 2.0, with room to spare.
        return {**super().chat_model_params, "temperature": 2.0, "max_tokens": 1000}


class TestChatQwenVLIntegrationServer(TestChatQwenVLIntegration):
    """The same suite against the session's vLLM server, each chat model building its own server engine from
    model= and base_url= (the standard timeout and max_retries then configure that engine's HTTP attempts)."""

    engine_fixture = "vllm_server"

    @property
    def chat_model_params(self) -> dict:
        server = _SHARED["engine"]
        return {
            "model": str(server.model),
            "base_url": server.base_url,
            "max_tokens": 400,
            "temperature": 1.0,
            "model_kwargs": {"seed": 7},
        }
