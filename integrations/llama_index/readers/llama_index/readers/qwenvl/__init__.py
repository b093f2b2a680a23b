"""LlamaIndex reader of qwenvl: `QwenVLReader` (a Document per page with its layout) and `LayoutNodeParser`
(nodes per block or chunk, with boxes and heading paths)."""

from qwenvl._lazy import require_framework

require_framework("llama_index.core", "llama-index-core>=0.14,<0.15")  # else MissingDependencyError with pip command

from llama_index.readers.qwenvl.base import LAYOUT_KEY, LayoutNodeParser, QwenVLReader  # noqa: E402

__all__ = ["LAYOUT_KEY", "LayoutNodeParser", "QwenVLReader"]
