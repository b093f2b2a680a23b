"""LlamaIndex integration of qwenvl: `QwenVLMultiModal`, the older multi-modal LLM API over `QwenVL`."""

from qwenvl._lazy import require_framework

require_framework("llama_index.core", "llama-index-core>=0.14,<0.15")  # else MissingDependencyError with pip command

from llama_index.multi_modal_llms.qwenvl.base import QwenVLMultiModal  # noqa: E402

__all__ = ["QwenVLMultiModal"]
