"""Lazy imports of heavy optional packages, with an install hint naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from qwenvl.errors import MissingDependencyError

__all__ = ["require", "require_framework"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise `MissingDependencyError` saying which qwenvl extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, extra, exc) from exc


def require_framework(module: str, requirement: str) -> ModuleType:
    """Import the framework an integration package plugs into, or raise `MissingDependencyError` with the pip
    command of ``requirement`` (e.g. ``"langchain-core>=1.0,<2"``)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        name = requirement.split(">")[0].split("<")[0].split("=")[0]
        raise MissingDependencyError(name, cause=exc, pip=f"pip install '{requirement}'") from exc
