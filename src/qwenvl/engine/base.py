"""The `Engine` protocol and what every engine shares: its facts, token counting, the context manager, error
results, LoRA adapter lookup and model checks. Request preparation lives in `qwenvl.engine.prepare`."""

from __future__ import annotations

import json
import logging
import os
import platform
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from qwenvl.engine.prepare import EngineDefaults, PreparedRequest, RequestPreparer, finalize
from qwenvl.errors import EngineClosedError, QwenVLError, RequestError
from qwenvl.messages import ChatChunk, ChatRequest, ChatResult, Usage
from qwenvl.models import ModelProfile

__all__ = [
    "Engine",
    "EngineBase",
    "EngineDefaults",
    "PreparedRequest",
    "RequestPreparer",
    "check_model_source",
    "cpu_bfloat16_emulated",
    "cpu_memory_share",
    "error_result",
    "finalize",
    "preparation_error",
]

_log = logging.getLogger(__name__)


@runtime_checkable
class Engine(Protocol):
    """What every qwenvl engine does. Results come back in request order; a request that fails gets a
    `ChatResult` with ``error`` set while the others complete."""

    @property
    def model_name(self) -> str:
        """The model's name (hub id or folder)."""

    @property
    def max_model_len(self) -> int:
        """The context length in tokens (prompt plus answer)."""

    def generate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Run a batch of requests; one result per request, in order."""

    async def agenerate(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        """Run a batch of requests without blocking the event loop."""

    def stream(self, request: ChatRequest) -> Iterator[ChatChunk]:
        """Yield the answer as it is generated; the last chunk carries finish_reason and usage."""

    def astream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """Async version of `stream`; stopping the iteration cancels the request."""

    def count_tokens(self, request: ChatRequest) -> Usage:
        """The prompt's token counts, computed before anything runs."""

    def close(self) -> None:
        """Free the engine's resources."""


class EngineBase(ABC):
    """What the engines share: their facts, token counting before running, and the context manager.

    Subclasses set ``_model``, ``_max_model_len``, ``_defaults`` and ``_preparer``, and define `close()`.
    """

    _model: str
    _max_model_len: int
    _defaults: EngineDefaults
    _preparer: RequestPreparer

    @property
    def model_name(self) -> str:
        """The model's name (hub id or folder)."""
        return self._model

    @property
    def max_model_len(self) -> int:
        """The context length in tokens (prompt plus answer)."""
        return self._max_model_len

    @property
    def defaults(self) -> EngineDefaults:
        """The per-request defaults (pixel limits, media policy, ...)."""
        return self._defaults

    @property
    def profile(self) -> ModelProfile:
        """The model's family profile (token factor, pixel defaults, box convention), read from its config."""
        return self._preparer.profile

    def count_tokens(self, request: ChatRequest) -> Usage:
        """The prompt's token counts (images at their final size), computed before anything runs."""
        prep = self._preparer.prepare(request)
        return Usage(prep.prompt_tokens, sum(prep.image_tokens), sum(prep.video_tokens))

    @abstractmethod
    def close(self) -> None:
        """Free the engine's resources."""

    # ---- plumbing every engine shares

    _closed: bool = False

    def _check_open(self) -> None:
        """Raise `EngineClosedError` once the engine was closed."""
        if self._closed:
            raise EngineClosedError(f"this {type(self).__name__} was closed; create a new one.")

    def _prepare(self, request: ChatRequest) -> PreparedRequest:
        """Prepare one request for this engine (engines add what is theirs, e.g. the LoRA handle)."""
        return self._preparer.prepare(request)

    def _prepare_or_raise(self, request: ChatRequest) -> PreparedRequest:
        """`_prepare`, with whatever it raises turned into a `QwenVLError` naming the request."""
        try:
            return self._prepare(request)
        except QwenVLError:
            raise
        except Exception as exc:
            raise preparation_error(request, exc) from exc

    def _try_prepare(self, request: ChatRequest) -> PreparedRequest | ChatResult:
        """The prepared request, or a failed result for it alone."""
        try:
            return self._prepare_or_raise(request)
        except QwenVLError as exc:
            _log.info("request %s cannot run: %s", getattr(request, "request_id", "?"), exc)
            return error_result(request, exc)

    def _usage_of(self, prompt_ids: Sequence[int], completion_tokens: int) -> Usage:
        """Usage counted from the prompt's token ids (image and video pads) and the answer's length."""
        image_id, video_id = self._preparer.image_token_id, self._preparer.video_token_id
        return Usage(
            prompt_tokens=len(prompt_ids),
            image_tokens=sum(1 for t in prompt_ids if t == image_id),
            video_tokens=sum(1 for t in prompt_ids if t == video_id),
            completion_tokens=completion_tokens,
        )

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class LoRAAdapter:
    """A LoRA adapter an engine serves: its name, its folder (PEFT format) and its rank."""

    name: str
    path: str
    rank: int


def resolve_lora(spec: str, named: dict[str, str], *, max_rank: int | None = None) -> LoRAAdapter:
    """The adapter a request names: one of ``named`` (name -> folder) or a folder holding adapter_config.json.

    Raises `RequestError` saying what to change when it is neither, or when its rank is over ``max_rank``.
    """
    path = named.get(spec, spec)
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        known = f" (registered: {', '.join(sorted(named))})" if named else ""
        raise RequestError(
            f"LoRA adapter {spec!r} is neither a registered name{known} nor a folder with adapter_config.json; "
            "pass the folder a fine-tune saved, or register the name with the engine."
        )
    rank = int(json.loads(config.read_text()).get("r", 0))
    if max_rank is not None and rank > max_rank:
        raise RequestError(
            f"LoRA adapter {spec!r} has rank {rank}, over the engine's max_lora_rank={max_rank}; "
            f"create the engine with max_lora_rank={rank} or more."
        )
    name = spec if spec in named else str(Path(path).resolve())
    return LoRAAdapter(name, str(Path(path).resolve()), rank)


def error_result(request: ChatRequest, error: BaseException) -> ChatResult:
    """A failed `ChatResult` for ``request``; non-qwenvl errors are wrapped in `EngineError`."""
    from qwenvl.errors import EngineError

    request_id = getattr(request, "request_id", None)
    if not isinstance(request_id, str):
        request_id = None
    if not isinstance(error, QwenVLError):
        wrapped = EngineError(f"request {request_id} failed: {type(error).__name__}: {error}")
        wrapped.__cause__ = error
        error = wrapped
    return ChatResult(error=error, request_id=request_id, finish_reason="error")


def preparation_error(request: object, exc: BaseException) -> QwenVLError:
    """The typed error for a request whose preparation raised something unexpected (a bug or odd input):
    a `RequestError` naming the request and the cause, so it fails alone."""
    request_id = getattr(request, "request_id", "?")
    error = RequestError(f"request {request_id} could not be prepared: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def check_model_source(model: str | os.PathLike[str]) -> str:
    """``model`` as a string, after refusing early what cannot load: a folder that does not exist, or, with
    ``HF_HUB_OFFLINE`` set, a hub id that is not in the local cache."""
    text = os.fspath(model)
    if not isinstance(text, str) or not text.strip():
        raise RequestError(f"model must be a hub id or a folder, got {model!r}.")
    path = Path(text).expanduser()
    looks_local = text.startswith(("/", "./", "../", "~")) or text.count("/") != 1 or path.exists()
    if looks_local:
        if not path.is_dir():
            raise RequestError(
                f"model folder {text!r} does not exist (or is not a folder); pass a folder with the model's "
                "config.json and weights, or a hub id such as 'Qwen/Qwen2-VL-2B-Instruct'."
            )
        return text
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - comes with transformers
            return text
        if not isinstance(try_to_load_from_cache(text, "config.json"), str):
            raise RequestError(
                f"model {text!r} is not in the local hub cache and HF_HUB_OFFLINE is set; download it first "
                "(huggingface-cli download), pass a local folder, or unset HF_HUB_OFFLINE."
            )
    return text


def cpu_memory_share(reserve: float = 0.2, floor: float = 0.05, cap: float = 0.9) -> float:
    """The share of this machine's memory that vLLM on the CPU may take: what is free now, less ``reserve``
    of it for everything else (vLLM refuses to start when its share is more than what is free)."""
    try:
        import psutil

        memory = psutil.virtual_memory()
        share = memory.available * (1 - reserve) / memory.total
    except Exception:  # pragma: no cover - psutil comes with vLLM
        return 0.3
    return round(min(cap, max(floor, share)), 3)


def cpu_kv_cache_fixed(engine_args: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> bool:
    """Whether vLLM on the CPU is given its KV cache size (``VLLM_CPU_KVCACHE_SPACE`` in GiB, or the engine
    argument ``kv_cache_memory_bytes``) instead of measuring what is left after its profiling run. ``environ``
    defaults to this process's environment."""
    if (engine_args or {}).get("kv_cache_memory_bytes"):
        return True
    value = (os.environ if environ is None else environ).get("VLLM_CPU_KVCACHE_SPACE", "").strip()
    try:
        return int(value) > 0
    except ValueError:
        return False


def cpu_bfloat16_emulated(cpuinfo: str | None = None, machine: str | None = None) -> bool:
    """Whether this is an x86 CPU without AVX-512, where bfloat16 (vLLM's ``dtype="auto"`` on the CPU) has no
    instructions of its own and runs emulated. ``cpuinfo`` (the text of /proc/cpuinfo) and ``machine``
    (`platform.machine()`) default to this machine's; False where they cannot be read."""
    if (machine or platform.machine()).lower() not in ("x86_64", "amd64"):
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return "avx512f" not in line.partition(":")[2].split()
    return False
