"""qwenvl: Qwen2-VL on vLLM for LangChain, LlamaIndex and document pipelines.

Importing this package loads neither vLLM nor torch; the engines import them when constructed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qwenvl.budget import image_tokens, smart_resize
from qwenvl.engine.base import Engine, EngineDefaults
from qwenvl.engine.factory import ENGINE_KINDS, create_engine
from qwenvl.engine.prepare import fit_to_context
from qwenvl.errors import (
    ContextOverflowError,
    EngineError,
    MediaError,
    MissingDependencyError,
    QwenVLError,
    RequestError,
    RequestTimeoutError,
)
from qwenvl.media import MediaPolicy
from qwenvl.messages import (
    ChatChunk,
    ChatRequest,
    ChatResult,
    Image,
    Message,
    SamplingOptions,
    Text,
    ToolCall,
    Usage,
    Video,
)

if TYPE_CHECKING:
    from qwenvl.engine.transformers_local import TransformersEngine
    from qwenvl.engine.vllm_local import VLLMEngine
    from qwenvl.engine.vllm_server import VLLMServerEngine

__version__ = "0.1.0"

__all__ = [
    "ChatChunk",
    "ChatRequest",
    "ChatResult",
    "ContextOverflowError",
    "Engine",
    "EngineDefaults",
    "EngineError",
    "Image",
    "MediaError",
    "MediaPolicy",
    "Message",
    "MissingDependencyError",
    "QwenVLError",
    "RequestError",
    "RequestTimeoutError",
    "SamplingOptions",
    "Text",
    "ToolCall",
    "TransformersEngine",
    "Usage",
    "VLLMEngine",
    "VLLMServerEngine",
    "Video",
    "create_engine",
    "fit_to_context",
    "image_tokens",
    "smart_resize",
]

#: engine class -> its module, from the one registry (`engine.factory.ENGINE_KINDS`)
_ENGINES = {cls: module for module, cls in ENGINE_KINDS.values()}


def __getattr__(name: str) -> Any:
    # Engines are imported on first use, so `import qwenvl` stays light.
    if name in _ENGINES:
        import importlib

        return getattr(importlib.import_module(_ENGINES[name]), name)
    raise AttributeError(f"module 'qwenvl' has no attribute {name!r}")
