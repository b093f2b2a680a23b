"""LlamaIndex integration of qwenvl: `QwenVLMultiModal`, the older multi-modal LLM API over `QwenVL`."""

from llama_index.multi_modal_llms.qwenvl.base import QwenVLMultiModal

__all__ = ["QwenVLMultiModal"]
