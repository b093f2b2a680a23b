"""LlamaIndex integration of qwenvl: `QwenVL`, Qwen2-VL (on vLLM) as a function-calling LLM."""

try:  # the framework this package plugs into
    import llama_index.core  # noqa: F401
except ImportError as _exc:
    from qwenvl.errors import MissingDependencyError

    raise MissingDependencyError(
        "llama-index-core", cause=_exc, pip="pip install 'llama-index-core>=0.14,<0.15'"
    ) from _exc

from llama_index.llms.qwenvl.base import QwenVL

__all__ = ["QwenVL"]
