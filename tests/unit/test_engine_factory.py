"""`create_engine` and `plan_engine`: the engine is chosen in one place, and options that cannot apply raise
(nothing starts: the checks run before any engine is built)."""

from __future__ import annotations

import pytest

from qwenvl import ChatRequest, Image, Message, create_engine
from qwenvl.engine.factory import engine_kind, engine_options, plan_engine
from qwenvl.errors import RequestError


class _Given:
    model_name = "given"


def test_a_given_engine_is_returned_and_takes_no_options() -> None:
    engine = _Given()
    assert create_engine(engine=engine) is engine  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="max_pixels"):
        create_engine(engine=engine, max_pixels=1000)  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="base_url"):
        create_engine(engine=engine, base_url="http://127.0.0.1:1/v1")  # type: ignore[arg-type]


def test_kind_follows_the_arguments() -> None:
    assert engine_kind("m") == "vllm"
    assert engine_kind("m", "http://h/v1") == "server"
    assert engine_kind("m", None, "transformers") == "transformers"
    with pytest.raises(RequestError, match="not one of"):
        engine_kind("m", None, "tensorrt")


def test_options_come_from_the_engines_constructors() -> None:
    assert {"timeout", "max_retries", "api_key"} <= engine_options("server")
    assert {"gpu_memory_utilization", "stall_timeout", "enable_lora"} <= engine_options("vllm")
    assert "timeout" not in engine_options("vllm") and "device" in engine_options("transformers")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"model": "m", "timeout": 3}, "VLLMEngine does not take timeout"),
        ({"model": "m", "max_retries": 3}, "max_retries"),
        ({"model": "m", "base_url": "http://h/v1", "gpu_memory_utilization": 0.5}, "gpu_memory_utilization"),
        ({"model": "m", "kind": "transformers", "api_key": "k"}, "api_key"),
        ({"model": "m", "kind": "transformers", "base_url": "http://h/v1"}, "base_url"),
        ({}, "no model"),
    ],
)
def test_options_that_cannot_apply_raise_before_anything_starts(
    kwargs: dict, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QWENVL_MODEL", raising=False)
    monkeypatch.delenv("QWENVL_BASE_URL", raising=False)
    with pytest.raises(RequestError, match=words):
        create_engine(**kwargs)


def test_none_options_keep_the_defaults() -> None:
    assert plan_engine("x", engine=None, model="m", base_url=None, options={"timeout": None}, explicit=set()) == "vllm"


def test_plan_refuses_settings_for_a_given_engine() -> None:
    with pytest.raises(RequestError, match="max_retries"):
        plan_engine("ChatX", engine=_Given(), model=None, base_url=None, options={}, explicit={"max_retries"})
    with pytest.raises(RequestError, match="needs model"):
        plan_engine("ChatX", engine=None, model=None, base_url=None, options={}, explicit=set())


def test_request_defaults_fill_only_what_is_unset() -> None:
    request = ChatRequest(
        [Message("user", [Image("a.png"), Image("b.png", max_pixels=50_000), Image("c.png", min_pixels=10)])],
        timeout=5.0,
    )
    out = request.with_defaults(min_pixels=100, max_pixels=100_000, timeout=60.0)
    assert [(i.min_pixels, i.max_pixels) for i in out.images()] == [(100, 100_000), (100, 50_000), (10, 100_000)]
    assert out.timeout == 5.0
    assert ChatRequest([Message("user", "x")]).with_defaults(timeout=60.0).timeout == 60.0
    with pytest.raises(RequestError, match="timeout"):
        ChatRequest([Message("user", "x")], timeout=0)


def test_the_command_passes_enforce_eager_to_the_in_process_engine_only(capsys: pytest.CaptureFixture[str]) -> None:
    from qwenvl.cli import build_parser, engine_arguments, main
    from qwenvl.errors import EngineError

    def options(*argv: str) -> dict:
        return engine_arguments(build_parser().parse_args(["chat", "a.png", "q", "--model", "m", *argv]))

    assert options("--enforce-eager")["engine_kwargs"] == {"enforce_eager": True}
    assert options()["engine_kwargs"] is None  # the engine's default: vLLM compiles the model
    assert "engine_kwargs" in engine_options(engine_kind("m", None))  # the in-process engine takes it
    with pytest.raises(EngineError, match="vllm serve --enforce-eager"):
        options("--enforce-eager", "--base-url", "http://127.0.0.1:9/v1")
    # the command says it in one line, before any engine or server is touched
    assert main(["chat", "a.png", "q", "--enforce-eager", "--base-url", "http://127.0.0.1:9/v1"]) == 2
    assert "--enforce-eager applies to the in-process engine" in capsys.readouterr().err
