"""`create_engine`: the one place where an engine is chosen and built from the arguments users give.

The chat models, the document loaders and readers, `DocumentParser` and the `qwenvl` command all build their
engine here. An engine kind is a name in `ENGINE_KINDS`; the options each kind takes are its constructor's
keyword arguments, so a new engine (a module in ``qwenvl/engine/`` and one line here) needs nothing else.
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import TYPE_CHECKING, Any

from qwenvl.errors import RequestError

if TYPE_CHECKING:
    from qwenvl.engine.base import Engine

__all__ = [
    "ENGINE_KINDS",
    "adapter_retries",
    "check_engine_options",
    "create_engine",
    "engine_class",
    "engine_kind",
    "engine_options",
    "model_engine_options",
    "plan_engine",
]

#: engine kind -> (module, class). "server" talks to vLLM servers; "vllm" runs vLLM in this process.
ENGINE_KINDS: dict[str, tuple[str, str]] = {
    "vllm": ("qwenvl.engine.vllm_local", "VLLMEngine"),
    "server": ("qwenvl.engine.vllm_server", "VLLMServerEngine"),
    "transformers": ("qwenvl.engine.transformers_local", "TransformersEngine"),
}
#: the positional arguments of the engines, which are not options
_POSITIONAL = frozenset({"self", "model", "base_url"})


def engine_class(kind: str) -> type:
    """The engine class of ``kind`` (its module is imported; vLLM and torch are not)."""
    if kind not in ENGINE_KINDS:
        raise RequestError(f"engine kind {kind!r} is not one of {', '.join(ENGINE_KINDS)}.")
    module, name = ENGINE_KINDS[kind]
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


def engine_options(kind: str) -> frozenset[str]:
    """The keyword options an engine of ``kind`` takes (read from its constructor)."""
    parameters = inspect.signature(engine_class(kind)).parameters
    return frozenset(name for name, p in parameters.items() if name not in _POSITIONAL and p.kind is not p.VAR_KEYWORD)


def engine_kind(model: str | None = None, base_url: str | list[str] | None = None, kind: str | None = None) -> str:
    """The kind of engine these arguments ask for: ``kind`` when given, "server" with a base URL, else "vllm"."""
    if kind is not None:
        engine_class(kind)  # a known kind
        return kind
    return "server" if base_url else "vllm"


def check_engine_options(kind: str, options: dict[str, Any], *, owner: str = "create_engine") -> None:
    """Raise `RequestError` naming every option that an engine of ``kind`` does not take."""
    unknown = sorted(set(options) - engine_options(kind))
    if unknown:
        cls = ENGINE_KINDS[kind][1]
        hint = (
            " timeout and max_retries per HTTP attempt apply to a vLLM server: pass base_url=."
            if kind != "server"
            else ""
        )
        raise RequestError(
            f"{owner}: {cls} does not take {', '.join(unknown)}; it takes "
            f"{', '.join(sorted(engine_options(kind)))}.{hint}"
        )


def create_engine(
    model: str | os.PathLike[str] | None = None,
    base_url: str | list[str] | None = None,
    engine: Engine | None = None,
    *,
    kind: str | None = None,
    **options: Any,
) -> Engine:
    """An engine from the usual arguments.

    - ``engine``: returned as it is; then no other argument may be given (they would configure a new engine).
    - ``base_url`` (default ``$QWENVL_BASE_URL``): a `VLLMServerEngine` for ``model`` on that server (or servers).
    - otherwise ``model`` (default ``$QWENVL_MODEL``; a hub id or folder): a `VLLMEngine` in this process, or
      the engine ``kind`` names ("transformers").

    ``options`` go to the engine's constructor; one whose value is None keeps the engine's default. An option
    the chosen engine does not take raises `RequestError` naming it; nothing is silently ignored.
    """
    given = {k: v for k, v in options.items() if v is not None}
    if engine is not None:
        extra = sorted([*given, *(["model"] if model else []), *(["base_url"] if base_url else [])])
        if extra or kind is not None:
            raise RequestError(
                f"create_engine: an engine is given, so {', '.join(extra) or 'kind'} cannot apply to it; configure "
                "the engine you pass, or drop engine= to build one."
            )
        return engine
    base_url = base_url or os.environ.get("QWENVL_BASE_URL") or None
    model = model or os.environ.get("QWENVL_MODEL") or None
    if model is None:
        raise RequestError("no model given: pass model= (a hub id or folder) or set $QWENVL_MODEL.")
    chosen = engine_kind(os.fspath(model), base_url, kind)
    check_engine_options(chosen, given)
    cls = engine_class(chosen)
    if chosen == "server":
        if not base_url:
            raise RequestError("a server engine needs base_url= (or $QWENVL_BASE_URL).")
        return cls(base_url, os.fspath(model), **given)  # type: ignore[no-any-return]
    if base_url:
        raise RequestError(f"base_url= is for a server engine, not for kind={chosen!r}; drop one of them.")
    return cls(model, **given)  # type: ignore[no-any-return]


def plan_engine(
    owner: str,
    *,
    engine: Any,
    model: str | None,
    base_url: str | list[str] | None,
    options: dict[str, Any],
    explicit: set[str],
) -> str | None:
    """Check, before anything starts, the engine settings a chat model or reader was given.

    With ``engine`` given, every setting in ``explicit`` (those the user set, which would configure a new
    engine) raises `RequestError` naming it. Otherwise the non-None ``options`` must be ones the chosen kind of
    engine takes. Returns that kind (None for a given engine)."""
    if engine is not None:
        if explicit:
            raise RequestError(
                f"{owner}: engine= is given, so {', '.join(sorted(explicit))} cannot apply to it; set them on the "
                "engine you pass, or drop engine= to let it build one."
            )
        return None
    if not model:
        raise RequestError(f"{owner} needs model= (a hub id or folder; with base_url= for a server) or engine=.")
    kind = engine_kind(model, base_url)
    check_engine_options(kind, {k: v for k, v in options.items() if v is not None}, owner=owner)
    return kind


def model_engine_options(
    model: str | None,
    base_url: str | list[str] | None,
    options: dict[str, Any],
    *,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    max_retries: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """The options a chat model or LLM passes to the engine it builds: its own engine ``options``, its pixel
    limits (as the engine's defaults), and for an engine that takes them (a server engine) ``max_retries`` and
    ``timeout`` per HTTP attempt (the per-call deadline travels on each request; an in-process engine's retries
    are the adapter's, `adapter_retries`). None keeps the engine's default."""
    out = dict(options)
    out.update(min_pixels=min_pixels, max_pixels=max_pixels)
    takes = engine_options(engine_kind(model, base_url))
    out.update({k: v for k, v in (("max_retries", max_retries), ("timeout", timeout)) if k in takes})
    return out


def adapter_retries(engine: Any, model: str | None, base_url: str | list[str] | None, max_retries: int | None) -> int:
    """How many times a chat model or LLM sends a transiently failed request again itself
    (`qwenvl.engine.retry`): none when the engine it builds retries on its own (a server engine takes
    ``max_retries``), else ``max_retries`` (None: none). With ``engine`` given, the adapter retries."""
    if not max_retries:
        return 0
    if max_retries < 0:
        raise RequestError(f"max_retries={max_retries!r}: give 0 or more.")
    if engine is None and "max_retries" in engine_options(engine_kind(model, base_url)):
        return 0
    return max_retries
