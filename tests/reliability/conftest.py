"""Reliability tests: bad, hostile and cancelled input. Every test here has a hard timeout, so a regression
that hangs fails instead of stalling CI."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "reliability" in str(item.fspath) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(180))
