"""Inference engines: vLLM in-process, a vLLM server, and transformers; all implement `Engine`."""

from qwenvl.engine.base import Engine, EngineDefaults

__all__ = ["Engine", "EngineDefaults"]
