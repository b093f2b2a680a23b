"""Reliability tests: bad, hostile and cancelled input. Every test here has a hard timeout, so a regression
that hangs fails instead of stalling CI. It counts the test's setup: the first test to use the session's shared
engine also waits for it to start (75 s alone, up to 150 s beside another test worker)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "reliability" in str(item.fspath) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(300))
