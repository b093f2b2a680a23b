"""LangChain integration of qwenvl: `ChatQwenVL` (Qwen2-VL on vLLM as a chat model) and the layout-aware
`QwenVLDocumentLoader` / `QwenVLBlobParser`."""

try:  # the framework this package plugs into
    import langchain_core  # noqa: F401
except ImportError as _exc:
    from qwenvl.errors import MissingDependencyError

    raise MissingDependencyError("langchain-core", cause=_exc, pip="pip install 'langchain-core>=1.0,<2'") from _exc

from langchain_qwenvl.chat_models import ChatQwenVL
from langchain_qwenvl.document_loaders import QwenVLBlobParser, QwenVLDocumentLoader

__all__ = ["ChatQwenVL", "QwenVLBlobParser", "QwenVLDocumentLoader"]
