"""Framework-neutral chat types: what goes into an engine and what comes out."""

from __future__ import annotations

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


Part: TypeAlias = Text | Image | Video


@dataclass(frozen=True)
class ToolCall:
    """A call of a tool by the model: its name and JSON arguments."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")


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
            for part in self.content:
                if not isinstance(part, Text | Image | Video):
                    raise RequestError(
                        f"a message part must be Text, Image or Video, got {type(part).__name__}; "
                        "wrap strings in Text(...) and pictures in Image(...)."
                    )

    def parts(self) -> list[Part]:
        """The content as a list of parts (a string becomes one `Text`)."""
        return [Text(self.content)] if isinstance(self.content, str) else list(self.content)

    @property
    def text(self) -> str:
        """The concatenated text of the message."""
        return "".join(p.text for p in self.parts() if isinstance(p, Text))


@dataclass(frozen=True)
class SamplingOptions:
    """How to decode. ``temperature=0`` (the default) is greedy decoding."""

    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    stop: Sequence[str] | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise RequestError(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.temperature < 0:
            raise RequestError(f"temperature must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise RequestError(f"top_p must be in (0, 1], got {self.top_p}.")


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

    def __post_init__(self) -> None:
        if not self.messages:
            raise RequestError("a ChatRequest needs at least one message.")
        for msg in self.messages:
            if not isinstance(msg, Message):
                raise RequestError(f"ChatRequest.messages holds Message objects, got {type(msg).__name__}.")

    def images(self) -> list[Image]:
        """Every image of the conversation, in order."""
        return [p for m in self.messages for p in m.parts() if isinstance(p, Image)]

    def videos(self) -> list[Video]:
        """Every video of the conversation, in order."""
        return [p for m in self.messages for p in m.parts() if isinstance(p, Video)]

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


def _check_pixels(min_pixels: int | None, max_pixels: int | None, what: str) -> None:
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels)):
        if value is not None and value <= 0:
            raise RequestError(f"{what} {name} must be positive, got {value}.")
    if min_pixels is not None and max_pixels is not None and min_pixels > max_pixels:
        raise RequestError(f"{what} min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels}).")
