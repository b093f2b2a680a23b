"""LlamaIndex reader of qwenvl: `QwenVLReader` (a Document per page with its layout) and `LayoutNodeParser`
(nodes per block or chunk, with boxes and heading paths)."""

try:  # the framework this package plugs into
    import llama_index.core  # noqa: F401
except ImportError as _exc:
    from qwenvl.errors import MissingDependencyError

    raise MissingDependencyError(
        "llama-index-core", cause=_exc, pip="pip install 'llama-index-core>=0.14,<0.15'"
    ) from _exc

from llama_index.readers.qwenvl.base import LAYOUT_KEY, LayoutNodeParser, QwenVLReader

__all__ = ["LAYOUT_KEY", "LayoutNodeParser", "QwenVLReader"]
