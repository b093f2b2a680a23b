"""Framework-neutral chat types: what goes into an engine and what comes out."""

from __future__ import annotations

import json
import math
import numbers
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, Union

from qwenvl.errors import QwenVLError, RequestError

if TYPE_CHECKING:
    import PIL.Image

__all__ = [
    "ChatChunk",
    "ChatRequest",
    "ChatResult",
    "Image",
    "ImageSource",
    "InvalidToolCall",
    "Message",
    "Part",
    "Role",
    "SamplingOptions",
    "Text",
    "ToolCall",
    "Usage",
    "Video",
]

#: Anything `qwenvl.media.load_image` accepts: a path, a file/data/http(s) URL, raw bytes or a PIL image.
ImageSource: TypeAlias = Union[str, Path, bytes, "PIL.Image.Image"]
Role = Literal["system", "user", "assistant", "tool"]
_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Text:
    """A piece of text in a message."""

    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise RequestError(f"Text({self.text!r}): the text must be a str, not {type(self.text).__name__}")


@dataclass(frozen=True)
class Image:
    """An image in a message, with optional per-image pixel limits (else the engine's defaults apply)."""

    source: ImageSource
    min_pixels: int | None = None
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        _check_pixels(self.min_pixels, self.max_pixels, "image")

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) when the source is a loaded PIL image, else None."""
        size = getattr(self.source, "size", None)
        return tuple(size) if isinstance(size, tuple) else None  # type: ignore[return-value]


@dataclass(frozen=True)
class Video:
    """A video (file path, or a sequence of frames), sampled by ``fps`` or ``nframes`` as qwen-vl-utils does."""

    source: str | Path | Sequence[ImageSource]
    fps: float | None = None
    nframes: int | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    #: frame rate of a list of frames (for fps sampling); files carry their own
    sample_fps: float = 2.0

    def __post_init__(self) -> None:
        _check_pixels(self.min_pixels, self.max_pixels, "video")
        if self.fps is not None and self.nframes is not None:
            raise RequestError("a Video takes fps or nframes, not both; drop one of them.")
        if self.fps is not None:
            _check_float("Video.fps", self.fps, lo=1e-3, hi=1000.0)
        if self.nframes is not None:
            _check_int("Video.nframes", self.nframes, lo=2, hi=100_000)
        _check_float("Video.sample_fps", self.sample_fps, lo=1e-3, hi=1000.0)


Part: TypeAlias = Text | Image | Video


@dataclass(frozen=True)
class ToolCall:
    """A call of a tool by the model: its name and JSON arguments."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise RequestError(f"ToolCall.name must be a non-empty string, got {_short(self.name)}.")
        if not isinstance(self.arguments, dict):
            raise RequestError(
                f"ToolCall {self.name!r}: arguments must be a dict, got {type(self.arguments).__name__}."
            )
        try:
            json.dumps(self.arguments, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RequestError(
                f"ToolCall {self.name!r}: arguments must be JSON-encodable (strings, numbers, lists, dicts), "
                f"and {exc}; convert them before building the call."
            ) from exc
        if not isinstance(self.id, str):
            raise RequestError(f"ToolCall {self.name!r}: id must be a string, got {_short(self.id)}.")


@dataclass(frozen=True)
class InvalidToolCall:
    """A ``<tool_call>`` block the model wrote that did not parse: its raw text and why."""

    raw: str
    error: str


@dataclass(frozen=True)
class Message:
    """One chat message. ``content`` is a string or a list of `Text`, `Image` and `Video` parts."""

    role: Role
    content: str | Sequence[Part] = ""
    tool_calls: Sequence[ToolCall] = ()
    #: for role "tool": the id of the call this message answers
    tool_call_id: str | None = None
    #: for role "tool": the tool's name
    name: str | None = None

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise RequestError(f"message role {self.role!r} is not one of {', '.join(_ROLES)}.")
        if not isinstance(self.content, str):
            if isinstance(self.content, bytes) or not isinstance(self.content, Sequence):
                raise RequestError(
                    f"message content must be a string or a list of parts, got {type(self.content).__name__}."
                )
            for part in self.content:
                if not isinstance(part, Text | Image | Video):
                    raise RequestError(
                        f"a message part must be Text, Image or Video, got {type(part).__name__}; "
                        "wrap strings in Text(...) and pictures in Image(...)."
                    )
        for call in self.tool_calls:
            if not isinstance(call, ToolCall):
                raise RequestError(f"Message.tool_calls holds ToolCall objects, got {type(call).__name__}.")

    def parts(self) -> list[Part]:
        """The content as a list of parts (a string becomes one `Text`)."""
        return [Text(self.content)] if isinstance(self.content, str) else list(self.content)

    @property
    def text(self) -> str:
        """The concatenated text of the message."""
        return "".join(p.text for p in self.parts() if isinstance(p, Text))


@dataclass(frozen=True)
class SamplingOptions:
    """How to decode. ``temperature=0`` (the default) is greedy decoding.

    Values are checked here, before anything reaches an engine: a non-integer count, NaN or infinity, a seed
    outside ``[0, 2**63)`` or a stop list that is not strings raises `RequestError` naming the field.
    """

    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `RequestError` naming the first field with a value no engine can take (engines call this
        again before sending, in case an object was changed after it was made)."""
        _check_int("SamplingOptions.max_tokens", self.max_tokens, lo=1, hi=MAX_TOKENS_LIMIT)
        _check_float("SamplingOptions.temperature", self.temperature, lo=0.0, hi=100.0)
        _check_float("SamplingOptions.top_p", self.top_p, lo=0.0, hi=1.0)
        if self.top_p == 0:
            raise RequestError("SamplingOptions.top_p must be in (0, 1], got 0.")
        if self.seed is not None:
            _check_int("SamplingOptions.seed", self.seed, lo=0, hi=2**63 - 1)
        if self.stop is not None:
            if isinstance(self.stop, str):
                object.__setattr__(self, "stop", (self.stop,))
            elif not isinstance(self.stop, Sequence) or not all(isinstance(s, str) and s for s in self.stop):
                raise RequestError(
                    f"SamplingOptions.stop must be a list of non-empty strings, got {_short(self.stop)}."
                )
            elif len(self.stop) > 64:
                raise RequestError(f"SamplingOptions.stop has {len(self.stop)} strings; give at most 64.")


#: the largest max_tokens accepted (an engine's context is smaller anyway)
MAX_TOKENS_LIMIT = 1 << 24


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_int(name: str, value: object, *, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | numbers.Integral):
        raise RequestError(f"{name} must be an integer, got {_short(value)}.")
    if not lo <= int(value) <= hi:
        raise RequestError(f"{name} must be in [{lo}, {hi}], got {value}.")


def _check_float(name: str, value: object, *, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RequestError(f"{name} must be a number, got {_short(value)}.")
    if not math.isfinite(float(value)):
        raise RequestError(f"{name} must be a finite number, got {value}.")
    if not lo <= float(value) <= hi:
        raise RequestError(f"{name} must be in [{lo}, {hi}], got {value}.")


@dataclass(frozen=True)
class ChatRequest:
    """One conversation to complete, with its sampling options and optional output constraints."""

    messages: Sequence[Message]
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    #: a JSON schema (dict) or a pydantic model class the answer must follow
    response_format: Any = None
    #: tool definitions: JSON schemas in the OpenAI function format
    tools: Sequence[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    #: a LoRA adapter to answer with: a name the engine knows, or a folder with a PEFT adapter (None: the base)
    lora: str | None = None
    #: a deadline in seconds from when the engine takes the request (None: none); past it the request is
    #: aborted and fails with `RequestTimeoutError`
    timeout: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.messages, str | bytes) or not isinstance(self.messages, Sequence):
            raise RequestError(
                f"ChatRequest.messages must be a list of Message objects, got {type(self.messages).__name__}."
            )
        if not self.messages:
            raise RequestError("a ChatRequest needs at least one message.")
        for msg in self.messages:
            if not isinstance(msg, Message):
                raise RequestError(f"ChatRequest.messages holds Message objects, got {type(msg).__name__}.")
        if not isinstance(self.sampling, SamplingOptions):
            raise RequestError(f"ChatRequest.sampling must be a SamplingOptions, got {type(self.sampling).__name__}.")
        if self.tools is not None:
            if isinstance(self.tools, str | bytes | dict) or not isinstance(self.tools, Sequence):
                raise RequestError(
                    f"ChatRequest.tools must be a list of tool definitions, got {type(self.tools).__name__}."
                )
            for i, tool in enumerate(self.tools):
                _check_tool(i, tool)
        if self.tool_choice is not None and not isinstance(self.tool_choice, str | dict):
            raise RequestError(
                f"ChatRequest.tool_choice must be 'auto', 'none', 'required', a tool name or a dict, "
                f"got {_short(self.tool_choice)}."
            )
        if not isinstance(self.request_id, str) or not self.request_id:
            raise RequestError(f"ChatRequest.request_id must be a non-empty string, got {_short(self.request_id)}.")
        if self.timeout is not None:
            _check_float("ChatRequest.timeout", self.timeout, lo=1e-3, hi=7 * 24 * 3600.0)
        if self.lora is not None and not isinstance(self.lora, str | Path):
            raise RequestError(f"ChatRequest.lora must be an adapter name or folder, got {_short(self.lora)}.")

    def images(self) -> list[Image]:
        """Every image of the conversation, in order."""
        return [p for m in self.messages for p in m.parts() if isinstance(p, Image)]

    def videos(self) -> list[Video]:
        """Every video of the conversation, in order."""
        return [p for m in self.messages for p in m.parts() if isinstance(p, Video)]

    @classmethod
    def for_call(
        cls,
        messages: Sequence[Message],
        sampling: SamplingOptions,
        call: dict[str, Any],
        *,
        lora: str | None = None,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        timeout: float | None = None,
    ) -> ChatRequest:
        """The request of one chat-model call: the call's keyword arguments (``response_format``, ``tools``,
        ``tool_choice``, ``lora``, ``timeout``) over the model's settings, its pixel limits applied per image."""
        request = cls(
            messages,
            sampling,
            response_format=call.get("response_format"),
            tools=call.get("tools"),
            tool_choice=call.get("tool_choice"),
            lora=call.get("lora", lora),
        )
        return request.with_defaults(min_pixels=min_pixels, max_pixels=max_pixels, timeout=call.get("timeout", timeout))

    def with_defaults(
        self, *, min_pixels: int | None = None, max_pixels: int | None = None, timeout: float | None = None
    ) -> ChatRequest:
        """A copy where images without their own pixel limits get these, and the request gets ``timeout``
        unless it has its own: the per-request form of settings made on a chat model for any engine."""
        request = self
        if min_pixels is not None or max_pixels is not None:
            request = request.map_images(
                lambda img: replace(
                    img,
                    min_pixels=img.min_pixels if img.min_pixels is not None else min_pixels,
                    max_pixels=img.max_pixels if img.max_pixels is not None else max_pixels,
                )
            )
        if timeout is not None and request.timeout is None:
            request = replace(request, timeout=timeout)
        return request

    def map_images(self, fn: Callable[[Image], Image]) -> ChatRequest:
        """A copy of the request with every image replaced by ``fn(image)``."""

        def convert(msg: Message) -> Message:
            if isinstance(msg.content, str):
                return msg
            return replace(msg, content=[fn(p) if isinstance(p, Image) else p for p in msg.content])

        return replace(self, messages=[convert(m) for m in self.messages])


@dataclass(frozen=True)
class Usage:
    """Token counts of one request, from what the engine actually processed."""

    prompt_tokens: int = 0
    image_tokens: int = 0
    video_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ChatResult:
    """The outcome of one request. ``error`` is set (and ``text`` empty) when this request failed."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: tool-call blocks that did not parse, kept with their raw text
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    error: QwenVLError | None = None
    #: the parsed answer when the request had a response_format
    parsed: Any = None
    request_id: str | None = None
    prompt_token_ids: list[int] | None = None
    token_ids: list[int] | None = None

    @property
    def ok(self) -> bool:
        """True when the request succeeded."""
        return self.error is None

    def raise_for_error(self) -> ChatResult:
        """Raise this result's error, if any; return the result otherwise."""
        if self.error is not None:
            raise self.error
        return self


@dataclass
class ChatChunk:
    """One streamed piece of an answer; the last chunk has ``finish_reason`` and ``usage``."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage | None = None
    request_id: str | None = None
    #: on the last chunk: the tool calls parsed from the whole answer
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: on the last chunk: the parsed structured answer, when the request had a response_format
    parsed: Any = None
    #: on the last chunk: why the structured answer or forced call did not parse, if it did not
    error: QwenVLError | None = None


def _check_tool(index: int, tool: object) -> None:
    """A tool definition must be a dict naming a function whose parameters are a JSON-schema dict."""
    hint = "give {'type': 'function', 'function': {'name': ..., 'parameters': {...}}}"
    if not isinstance(tool, dict):
        raise RequestError(f"ChatRequest.tools[{index}] must be a dict, got {_short(tool)}; {hint}.")
    fn = tool.get("function", tool)
    if tool.get("type", "function") != "function" or not isinstance(fn, dict):
        raise RequestError(f"ChatRequest.tools[{index}] is not a function tool ({_short(tool)}); {hint}.")
    if not isinstance(fn.get("name"), str) or not fn["name"]:
        raise RequestError(f"ChatRequest.tools[{index}] has no function name; {hint}.")
    params = fn.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise RequestError(
            f"ChatRequest.tools[{index}] ({fn['name']!r}): parameters must be a JSON-schema dict, got {_short(params)}."
        )
    try:
        json.dumps(fn, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"ChatRequest.tools[{index}] ({fn['name']!r}) is not JSON-encodable: {exc}.") from exc


def _check_pixels(min_pixels: int | None, max_pixels: int | None, what: str) -> None:
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise RequestError(f"{what} {name} must be an integer, got {_short(value)}.")
        if value is not None and value <= 0:
            raise RequestError(f"{what} {name} must be positive, got {value}.")
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise RequestError(f"{what} min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels}).")
