"""Lazy imports of heavy optional packages, with an install hint naming the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

from qwenvl.errors import MissingDependencyError

__all__ = ["require"]


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise `MissingDependencyError` saying which qwenvl extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, extra, exc) from exc
