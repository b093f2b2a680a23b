"""The repository's test runs: the shared fixtures (the tiny Qwen2-VL, one engine of each kind, the server, a
scanned PDF, a local embedding model) come from the test kit's pytest plugin (`qwenvl_testkit.plugin`, in
testkit/), which each integration's own test run loads too; here, only how `make test` spreads files over its
workers."""

from __future__ import annotations

import pytest

from qwenvl_testkit.plugin import SERVER_FIXTURES

# The test files that use the session's shared server (`vllm_server`, `server_engine`). Under `make test`
# (pytest-xdist, `--dist loadfile`), one worker runs them all, so only one worker starts the server (its three
# processes hold about 4.5 GB); a file missing here fails the collection.
SERVER_FILES = {
    "integrations/langchain/tests/test_langchain_standard.py",
    "tests/cookbook/test_cli.py",
    "tests/engine/test_server_engine.py",
    "tests/layout/test_vlm_pipeline.py",
}


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
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
    } - SERVER_FILES
    if unlisted:
        raise pytest.UsageError(f"{sorted(unlisted)} use the shared server: add them to SERVER_FILES in conftest.py")
