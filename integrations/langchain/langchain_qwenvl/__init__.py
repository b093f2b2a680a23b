"""LangChain integration of qwenvl: `ChatQwenVL` (Qwen2-VL on vLLM as a chat model) and the layout-aware
`QwenVLDocumentLoader` / `QwenVLBlobParser`."""

from langchain_qwenvl.chat_models import ChatQwenVL
from langchain_qwenvl.document_loaders import QwenVLBlobParser, QwenVLDocumentLoader

__all__ = ["ChatQwenVL", "QwenVLBlobParser", "QwenVLDocumentLoader"]
