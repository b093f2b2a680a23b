"""LangChain integration of qwenvl: `ChatQwenVL`, Qwen2-VL (on vLLM) as a chat model."""

from langchain_qwenvl.chat_models import ChatQwenVL

__all__ = ["ChatQwenVL"]
