"""LlamaIndex integration of qwenvl: `QwenVL`, Qwen2-VL (on vLLM) as a function-calling LLM."""

from llama_index.llms.qwenvl.base import QwenVL

__all__ = ["QwenVL"]
