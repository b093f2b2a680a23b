"""LlamaIndex reader of qwenvl: `QwenVLReader` (a Document per page with its layout) and `LayoutNodeParser`
(nodes per block or chunk, with boxes and heading paths)."""

from llama_index.readers.qwenvl.base import LAYOUT_KEY, LayoutNodeParser, QwenVLReader

__all__ = ["LAYOUT_KEY", "LayoutNodeParser", "QwenVLReader"]
