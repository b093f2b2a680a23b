"""Checks shared by the option dataclasses: values outside a ``Literal`` field's set are refused, and the part
of a set of options that decides a result becomes a cache key."""

from __future__ import annotations

import dataclasses
import functools
import typing
from enum import Enum
from typing import Any, Literal

from qwenvl.errors import LayoutError

__all__ = ["cache_fingerprint", "refuse_unknown_choices"]


def refuse_unknown_choices(options: Any) -> None:
    """Raises `LayoutError` for a field of the dataclass ``options`` whose value is outside its ``Literal``
    type's set, naming the valid values (a typo such as ``layout_format="HTML"`` would otherwise run another
    path silently)."""
    for name, choices in _choices(type(options)).items():  # type: ignore[arg-type]
        value = getattr(options, name)
        if value not in choices:
            raise LayoutError(f"{name}={value!r}: use one of {', '.join(map(repr, choices))}")


@functools.cache
def _choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """The fields of the dataclass ``cls`` typed as a ``Literal``, with their values."""
    hints = typing.get_type_hints(cls)
    return {
        f.name: typing.get_args(hints[f.name])
        for f in dataclasses.fields(cls)
        if typing.get_origin(hints[f.name]) is Literal
    }


def cache_fingerprint(options: Any) -> Any:
    """The part of ``options`` (a dataclass, nested) that decides what a page becomes, as JSON-ready data."""
    if dataclasses.is_dataclass(options) and not isinstance(options, type):
        out = {
            f.name: cache_fingerprint(getattr(options, f.name))
            for f in dataclasses.fields(options)
            if f.metadata.get("cache", True)
        }
        if hasattr(options, "prompt_version"):  # a class attribute: the prompt's text is part of the result
            out["prompt_version"] = options.prompt_version
        return out
    if isinstance(options, Enum):
        return options.value
    if isinstance(options, str | int | float | bool) or options is None:
        return options
    return getattr(options, "name", type(options).__name__)  # an OCR engine instance: its name
