"""One exception hierarchy for qwenvl; every message says what went wrong and what to change."""

from __future__ import annotations

__all__ = [
    "ContextOverflowError",
    "DocumentError",
    "EngineError",
    "EngineClosedError",
    "EngineDeadError",
    "ImageSizeError",
    "LayoutError",
    "MediaDecodeError",
    "MediaError",
    "MediaFetchError",
    "MediaNotFoundError",
    "MediaPolicyError",
    "MissingDependencyError",
    "ModelError",
    "OCRUnavailableError",
    "PageError",
    "PageLimitError",
    "QwenVLError",
    "RequestError",
    "RequestTimeoutError",
    "ServerError",
    "StructuredOutputError",
    "UnsupportedMediaError",
]


class QwenVLError(Exception):
    """Base class of every error qwenvl raises on purpose."""


class MissingDependencyError(QwenVLError, ImportError):
    """An optional package is not installed; the message names the pip command that installs it."""

    def __init__(
        self, module: str, extra: str | None = None, cause: BaseException | None = None, *, pip: str | None = None
    ) -> None:
        self.module = module
        self.extra = extra
        self.pip = pip or f"pip install 'qwenvl[{extra}]'"
        detail = f" ({cause})" if cause else ""
        super().__init__(
            f"qwenvl needs the package '{module}' for this, and it could not be imported{detail}. "
            f"Install it with: {self.pip}"
        )


class RequestError(QwenVLError, ValueError):
    """A request is malformed (wrong role, too many images, bad sampling value, ...)."""


class MediaError(RequestError):
    """An image or video could not be used; ``source`` names the input."""

    def __init__(self, message: str, source: object = None) -> None:
        self.source = source
        super().__init__(message)


class MediaNotFoundError(MediaError, FileNotFoundError):
    """A local media file does not exist."""


class MediaDecodeError(MediaError):
    """The bytes of an image or video could not be decoded."""


class UnsupportedMediaError(MediaError):
    """The input is of a kind or format qwenvl does not accept as an image or video."""


class ImageSizeError(MediaError):
    """An image is empty or too elongated for Qwen2-VL (aspect ratio over 200)."""


class MediaPolicyError(MediaError, PermissionError):
    """The media policy forbids reading this input (remote URL, local path, size)."""


class MediaFetchError(MediaError):
    """A remote image could not be fetched (network error, HTTP status, timeout)."""


class DocumentError(MediaError):
    """A document that cannot be opened: missing, encrypted, corrupt, empty or of an unsupported type."""


class PageError(DocumentError):
    """One page of a document that cannot be read (its object is missing or junk, pdfium cannot load or draw
    it); the message names the file and the page. The document's other pages are read as usual."""


class PageLimitError(PageError):
    """A page that went past the PDF reader's limits: its memory (a decompression bomb, a page too large to
    draw), its deadline, or a crash of the reader. The page is not tried again; raise `PdfLimits` to allow it."""


class LayoutError(QwenVLError, ValueError):
    """Layout data or a layout option that cannot be used (another schema version, an empty box, ...)."""


class OCRUnavailableError(QwenVLError, FileNotFoundError):
    """An OCR engine's language data or program is missing; the message says what to install."""


class ModelError(QwenVLError, ValueError):
    """A checkpoint qwenvl cannot serve: not a Qwen-VL family, or its config unreadable."""


class ContextOverflowError(RequestError):
    """A prompt does not fit the model's context, even at the smallest allowed image size."""

    def __init__(self, message: str, *, prompt_tokens: int, max_model_len: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.max_model_len = max_model_len
        self.overflow = prompt_tokens - max_model_len
        super().__init__(message)


class StructuredOutputError(QwenVLError, ValueError):
    """An answer made under a response format or a forced tool call does not parse or validate.

    ``raw_text`` keeps what the model wrote.
    """

    def __init__(self, message: str, *, raw_text: str) -> None:
        self.raw_text = raw_text
        super().__init__(message)


class EngineError(QwenVLError, RuntimeError):
    """The inference engine failed while running a request."""


class RequestTimeoutError(EngineError, TimeoutError):
    """A request ran past its ``timeout`` and was aborted; raise the timeout or send less work."""

    @classmethod
    def of(cls, request: object) -> RequestTimeoutError:
        """The error of ``request`` (a `ChatRequest`) past its deadline."""
        request_id, timeout = getattr(request, "request_id", "?"), getattr(request, "timeout", None)
        return cls(
            f"request {request_id} ran past its timeout ({timeout:g} s) and was stopped; raise the timeout, or ask "
            "for fewer tokens."
        )


class EngineDeadError(EngineError):
    """The in-process engine died (its process was killed, or one step ran past ``stall_timeout``), or dropped
    a request; ``engine.restart()`` brings it back. A failure of this kind is transient: the adapters'
    ``max_retries`` restarts the engine and sends the request again."""


class EngineClosedError(EngineError):
    """The engine was used after `close()`."""


class ServerError(EngineError):
    """A vLLM server answered with an error or could not be reached; ``status`` is the HTTP status (None when
    no answer came)."""

    def __init__(self, message: str, *, status: int | None = None, url: str | None = None) -> None:
        self.status = status
        self.url = url
        super().__init__(message)
