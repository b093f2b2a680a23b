"""LangChain integration of qwenvl: `ChatQwenVL` (Qwen2-VL on vLLM as a chat model) and the layout-aware
`QwenVLDocumentLoader` / `QwenVLBlobParser`."""

from qwenvl._lazy import require_framework

require_framework("langchain_core", "langchain-core>=1.0,<2")  # else MissingDependencyError with pip command

from langchain_qwenvl.chat_models import ChatQwenVL  # noqa: E402
from langchain_qwenvl.document_loaders import QwenVLBlobParser, QwenVLDocumentLoader  # noqa: E402

__all__ = ["ChatQwenVL", "QwenVLBlobParser", "QwenVLDocumentLoader"]
