"""LlamaIndex integration of qwenvl: `QwenVL`, Qwen2-VL (on vLLM) as a function-calling LLM."""

from qwenvl._lazy import require_framework

require_framework("llama_index.core", "llama-index-core>=0.14,<0.15")  # else MissingDependencyError with pip command

from llama_index.llms.qwenvl.base import QwenVL  # noqa: E402

__all__ = ["QwenVL"]
