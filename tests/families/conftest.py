"""Per-family fixtures: the tiny Qwen2.5-VL and Qwen3-VL, each with one in-process vLLM engine (LoRA on), one
transformers engine and one vLLM server, alive only while that family's tests run (module scope, one family
at a time). Qwen2-VL has the session engines of the root conftest. Both vLLM engines here run eager (no
torch.compile: tests/helpers.EAGER)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import EAGER, EAGER_SERVER_ARGS, ENGINE_ARGS

#: the families tested here besides Qwen2-VL
NEW_FAMILIES = ["qwen2_5_vl", "qwen3_vl"]


@pytest.fixture(scope="module", params=NEW_FAMILIES)
def family(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def family_model(family: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qwenvl.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp(f"tiny-{family}"), family=family)


@pytest.fixture(scope="module")
def family_vllm(family_model: Path) -> Iterator[Any]:
    from qwenvl import VLLMEngine

    engine = VLLMEngine(
        family_model,
        gpu_memory_utilization=0.2,
        limit_images=4,
        limit_videos=1,
        enable_lora=True,
        max_loras=1,
        max_lora_rank=16,
        engine_kwargs=EAGER,
        **ENGINE_ARGS,
    )
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def family_hf(family_model: Path) -> Iterator[Any]:
    from qwenvl import TransformersEngine

    engine = TransformersEngine(family_model, **ENGINE_ARGS)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def family_server(family_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from qwenvl import VLLMServerEngine
    from qwenvl.testing import VLLMServerProcess

    log = tmp_path_factory.mktemp("server") / "vllm-server.log"
    with VLLMServerProcess(family_model, log_path=log, extra_args=EAGER_SERVER_ARGS) as server:
        engine = VLLMServerEngine(server.base_url, str(family_model), limit_videos=1, return_token_ids=True)
        yield engine
        engine.close()
