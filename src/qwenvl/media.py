"""Loading images and videos from paths, URLs, bytes and PIL images, under a policy for untrusted input.

Default policy (`MediaPolicy()`): local files are read from anywhere, http(s) URLs are fetched only from
public addresses (loopback, private, link-local and reserved addresses are refused, against server-side
request forgery), at most 32 MiB per file, 10 s per fetch, 3 redirects. For input typed by users or passed on
by agents, use `MediaPolicy.untrusted()` (no local files, remote only from the domains you list) or set the
fields yourself.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import math
import os
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import PIL.Image

from qwenvl._lazy import require
from qwenvl.budget import MAX_RATIO, smart_nframes, smart_resize
from qwenvl.errors import (
    ImageSizeError,
    MediaDecodeError,
    MediaError,
    MediaFetchError,
    MediaNotFoundError,
    MediaPolicyError,
    UnsupportedMediaError,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DEFAULT_POLICY",
    "JPEG_QUALITY",
    "IMAGE_FORMATS",
    "MediaPolicy",
    "EncodedImage",
    "describe_source",
    "is_public_address",
    "frames_to_array",
    "image_data_uri",
    "jpeg_data_uri",
    "load_image",
    "load_image_encoded",
    "load_jpeg_at",
    "load_video",
    "photo_like",
    "pixel_limit_error",
    "png_data_uri",
    "read_source_bytes",
    "resize_image",
]

#: Image formats accepted (PIL format names).
IMAGE_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP", "TIFF", "PPM", "ICO"})

#: formats whose files any PIL-based reader (vLLM's server included) decodes to the pixels `load_image` gives,
#: when their mode is one of `_AS_IS_MODES`: such files can be sent on unchanged
_AS_IS_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_AS_IS_MODES = frozenset({"RGB", "L"})
_ORIENTATION = 0x0112  # the EXIF tag


@dataclass(frozen=True)
class EncodedImage:
    """An image file's bytes as they were read, and their MIME type."""

    mime: str
    data: bytes

    def data_uri(self) -> str:
        """The bytes as a base64 data URI."""
        return f"data:{self.mime};base64," + base64.b64encode(self.data).decode()


@dataclass(frozen=True)
class MediaPolicy:
    """What media inputs may be read, and how much of them."""

    allow_local: bool = True
    #: when set, local paths must lie under this folder (after resolving symlinks)
    local_root: str | os.PathLike[str] | None = None
    allow_remote: bool = True
    #: when set, remote URLs must be on one of these hosts (or their subdomains)
    allowed_domains: Sequence[str] | None = None
    #: allow URLs that resolve to loopback/private/link-local addresses (off: SSRF protection)
    allow_private_hosts: bool = False
    max_bytes: int = 32 * 1024 * 1024
    #: the deadline of one fetch in seconds, redirects and a slow body included (not a per-read timeout)
    timeout: float = 10.0
    max_redirects: int = 3
    #: the most pixels an image may decode to (checked from its header, before decoding: a small file can
    #: claim a huge canvas); 100 MP is a 108 MP phone photo's order, 400 MB as RGBA
    max_image_pixels: int = 100_000_000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_redirects", "max_image_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "max_redirects" else 1):
                raise MediaPolicyError(f"MediaPolicy.{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.timeout, int | float) or not math.isfinite(self.timeout) or self.timeout <= 0:
            raise MediaPolicyError(f"MediaPolicy.timeout must be a positive number of seconds, got {self.timeout!r}.")

    @classmethod
    def untrusted(cls, allowed_domains: Sequence[str] = ()) -> MediaPolicy:
        """A policy for input from users or agents: no local files; remote only from ``allowed_domains``
        (none when empty); data: URIs, bytes and PIL images still work."""
        return cls(allow_local=False, allow_remote=bool(allowed_domains), allowed_domains=tuple(allowed_domains))

    @classmethod
    def trusted(cls) -> MediaPolicy:
        """A policy for input your own code builds: local files and every URL, private hosts included."""
        return cls(allow_private_hosts=True)


DEFAULT_POLICY = MediaPolicy()


def describe_source(source: object) -> str:
    """A short, log-safe description of a media source for error messages."""
    if isinstance(source, bytes | bytearray):
        return f"<{len(source)} bytes>"
    if isinstance(source, str) and source.startswith("data:"):
        return source[: min(40, source.find(",") + 1 or 40)] + "...>"
    if hasattr(source, "size") and hasattr(source, "mode"):
        return f"<PIL image {getattr(source, 'size', '?')}>"
    text = str(source)
    return text if len(text) <= 200 else text[:200] + "..."


def read_source_bytes(source: str | os.PathLike[str] | bytes, policy: MediaPolicy | None = None) -> bytes:
    """Return the raw bytes of a path, file:// URL, data: URI, http(s) URL or bytes, under ``policy``."""
    policy = policy or DEFAULT_POLICY
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    elif isinstance(source, os.PathLike):
        data = _read_local(Path(source), policy, source)
    elif isinstance(source, str):
        lower = source[:10].lower()
        if lower.startswith("data:"):
            data = _decode_data_uri(source)
        elif lower.startswith(("http://", "https://")):
            data = _fetch(source, policy)
        elif lower.startswith("file://"):
            parsed = urllib.parse.urlparse(source)
            data = _read_local(Path(urllib.parse.unquote(parsed.path)), policy, source)
        elif "://" in source[:16]:
            raise UnsupportedMediaError(
                f"media source {describe_source(source)} has an unsupported URL scheme; use a path, "
                "file://, data: or http(s):// URL, bytes or a PIL image.",
                source,
            )
        else:
            data = _read_local(Path(source), policy, source)
    else:
        raise UnsupportedMediaError(
            f"cannot read media from a {type(source).__name__}; give a path, URL, data: URI, bytes or PIL image.",
            source,
        )
    if len(data) > policy.max_bytes:
        raise MediaPolicyError(
            f"media {describe_source(source)} is {len(data)} bytes, over the policy's max_bytes "
            f"({policy.max_bytes}); shrink the file or raise MediaPolicy.max_bytes.",
            source,
        )
    return data


def load_image(source: Any, policy: MediaPolicy | None = None) -> PIL.Image.Image:
    """Load an image as RGB (transparency composited on white; a file turned as its EXIF orientation says) from
    any `ImageSource`.

    Raises a `MediaError` subclass naming the input when it is missing, undecodable, of an unsupported
    format, empty, too elongated (aspect ratio over 200) or forbidden by ``policy``.
    """
    return load_image_encoded(source, policy)[0]


def load_image_encoded(
    source: Any, policy: MediaPolicy | None = None, *, decode: bool = True
) -> tuple[PIL.Image.Image, EncodedImage | None]:
    """`load_image`, and the file's bytes as they were when a PIL-based reader (vLLM's server) decodes them to
    the same image: a JPEG, PNG or WebP file in RGB or grayscale. None for other sources (PIL images, other
    formats and modes), which must be encoded anew to be sent.

    ``decode=False`` is for a client that sends such files on as they are: a whole RGB file of those formats
    (its header read, its end where the format puts it) is returned undecoded, its pixels read only when they
    are asked for; anything else is decoded as with ``decode=True``."""
    pil = PIL.Image
    encoded: EncodedImage | None = None
    if isinstance(source, pil.Image):
        image = source
        image.load()
    else:
        data = read_source_bytes(source, policy)
        if not data:
            raise MediaDecodeError(f"image {describe_source(source)} is empty (0 bytes).", source)
        try:
            image = pil.open(io.BytesIO(data))
            too_big = pixel_limit_error(image.size, policy, source)
            lazy = not decode and image.mode == "RGB" and _looks_whole(image.format, data)
            if too_big is None and not lazy:  # the header is read; only an image within the limit is decoded
                image.load()
        except pil.DecompressionBombError as exc:
            raise ImageSizeError(
                f"image {describe_source(source)} is too large to decode safely ({exc}); downscale it first.", source
            ) from exc
        except pil.UnidentifiedImageError as exc:
            raise UnsupportedMediaError(
                f"image {describe_source(source)} is not in a known image format; give PNG, JPEG, WebP, GIF, "
                "BMP or TIFF (render PDF pages with qwenvl.layout first).",
                source,
            ) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise MediaDecodeError(
                f"image {describe_source(source)} could not be decoded ({exc}); the file may be truncated or corrupt.",
                source,
            ) from exc
        if too_big is not None:
            raise too_big
        if image.format not in IMAGE_FORMATS:
            raise UnsupportedMediaError(
                f"image {describe_source(source)} is in format {image.format}, which is not accepted; "
                f"convert it to one of {', '.join(sorted(IMAGE_FORMATS))}.",
                source,
            )
        if image.format in _AS_IS_FORMATS and image.mode in _AS_IS_MODES:
            encoded = EncodedImage(_AS_IS_FORMATS[image.format], data)
        image = _upright(image)
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageSizeError(f"image {describe_source(source)} has zero size ({width}x{height}).", source)
    if max(width, height) / min(width, height) > MAX_RATIO:
        raise ImageSizeError(
            f"image {describe_source(source)} is {width}x{height}: aspect ratio over {MAX_RATIO}, which "
            "Qwen2-VL cannot take; crop or pad it.",
            source,
        )
    return _to_rgb(image), encoded


def _looks_whole(fmt: str | None, data: bytes) -> bool:
    """Whether a file of format ``fmt`` ends as one that was not cut short does (a cheap check in place of
    decoding it)."""
    if fmt == "JPEG":
        return b"\xff\xd9" in data[-4096:]
    if fmt == "PNG":
        return b"IEND" in data[-64:]
    if fmt == "WEBP":
        return len(data) >= 12 and int.from_bytes(data[4:8], "little") + 8 <= len(data)
    return False


def load_jpeg_at(data: bytes, size: tuple[int, int]) -> PIL.Image.Image:
    """A JPEG file's bytes as an upright RGB image of ``size`` (width, height), decoded at the smallest scale
    that covers it (DCT scaling: cheaper than decoding it whole), then resized."""
    source = PIL.Image.open(io.BytesIO(data))
    turned = source.getexif().get(_ORIENTATION, 1) in (5, 6, 7, 8)  # a quarter turn: the file's sides swap
    source.draft("RGB", size[::-1] if turned else size)
    return _upright(source).convert("RGB").resize(size, resample=PIL.Image.Resampling.BICUBIC)


def _upright(image: PIL.Image.Image) -> PIL.Image.Image:
    """``image`` as displayed: turned as its EXIF orientation says (as vLLM's server does)."""
    try:
        orientation = image.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as viewers and vLLM ignore it
        return image
    if orientation in (None, 1):
        return image
    import PIL.ImageOps

    return PIL.ImageOps.exif_transpose(image)


def pixel_limit_error(
    size: tuple[int, int], policy: MediaPolicy | None, source: object, what: str = "image"
) -> ImageSizeError | None:
    """The error for an image of ``size`` (width, height, known from its header) that is over the policy's
    ``max_image_pixels``, or None when it is within it."""
    limit = (policy or DEFAULT_POLICY).max_image_pixels
    width, height = size
    if width * height <= limit:
        return None
    return ImageSizeError(
        f"{what} of {describe_source(source)} is {width}x{height} = {width * height / 1e6:.0f} MP, over the media "
        f"policy's max_image_pixels ({limit / 1e6:.0f} MP); downscale it first or raise MediaPolicy.max_image_pixels.",
        source,
    )


def resize_image(
    image: PIL.Image.Image, min_pixels: int, max_pixels: int, *, factor: int = 28, fast: bool = False
) -> PIL.Image.Image:
    """Resize an RGB image to the model's size for these pixel limits (see `qwenvl.models.smart_resize`);
    ``factor`` is the family's token side in pixels (28 for Qwen2/2.5-VL, 32 for Qwen3-VL). Bicubic, as the
    processors resize; ``fast``: shrink by whole factors, then bilinear (1.75x less CPU on photos, for an image
    that is sent lossy anyway)."""
    h, w = smart_resize(image.height, image.width, min_pixels, max_pixels, factor=factor)
    if (w, h) == image.size:
        return image
    if fast:
        return image.resize((w, h), resample=PIL.Image.Resampling.BILINEAR, reducing_gap=1.0)
    return image.resize((w, h), resample=PIL.Image.Resampling.BICUBIC)


def load_video(
    source: str | os.PathLike[str] | Sequence[Any],
    *,
    fps: float | None = None,
    nframes: int | None = None,
    sample_fps: float = 2.0,
    policy: MediaPolicy | None = None,
) -> tuple[list[PIL.Image.Image], float]:
    """Load a video as sampled RGB frames, and the rate they were sampled at (frames per second).

    ``source`` is a video file (path or file:// URL, decoded with OpenCV) or a sequence of frames (any
    `ImageSource`) recorded at ``sample_fps``. Frames are sampled evenly as qwen-vl-utils does: ``nframes``,
    or ``fps`` frames per second (default 2); always an even number, at least 2.
    """
    if isinstance(source, str | os.PathLike):
        total, video_fps, read = _open_video_file(source, policy)
    elif isinstance(source, Sequence) and not isinstance(source, bytes | bytearray):
        frames = [load_image(f, policy) for f in source]
        if not frames:
            raise MediaDecodeError("a video given as a list of frames has no frames.", source)
        total, video_fps = len(frames), sample_fps

        def read(indices: list[int]) -> list[PIL.Image.Image]:
            return [frames[i] for i in indices]

    else:
        raise UnsupportedMediaError(
            f"a video must be a file path or a list of frames, got {type(source).__name__}.", source
        )
    if total < 2:
        raise MediaDecodeError(
            f"video {describe_source(source)} has {total} frame(s); Qwen2-VL needs at least 2.", source
        )
    try:
        count = smart_nframes(total, video_fps, fps=fps, nframes=nframes)
    except ValueError as exc:
        raise MediaError(f"video {describe_source(source)}: {exc}", source) from exc
    # Evenly spaced indices, rounded as torch.linspace(0, total - 1, count).round() in qwen-vl-utils.
    indices = [round(i * (total - 1) / (count - 1)) if count > 1 else 0 for i in range(count)]
    picked = read(indices)
    first = picked[0].size
    sampled = [f if f.size == first else f.resize(first) for f in picked]
    return sampled, count / total * video_fps


def frames_to_array(frames: Sequence[PIL.Image.Image]) -> np.ndarray:
    """Stack RGB frames into a (T, H, W, 3) uint8 array."""
    import numpy as np

    return np.stack([np.asarray(f, dtype=np.uint8) for f in frames])


def _to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    pil = PIL.Image
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _scale_to_8bit(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = pil.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _scale_to_8bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """A 16-bit, 32-bit integer or float grey image as 8-bit grey, by scaling its range (never clipping):
    16-bit data by 1/257; other integers by their own range; floats in [0, 1] by 255, others by their range."""
    import numpy as np

    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    lo = float(finite.min()) if finite.size else 0.0
    hi = float(finite.max()) if finite.size else 0.0
    if image.mode.startswith("I;16") or (image.mode == "I" and lo >= 0 and 255 < hi <= 65535):
        scaled = values / 257.0
    elif image.mode == "F" and lo >= 0 and hi <= 1.0:
        scaled = values * 255.0
    elif lo >= 0 and hi <= 255:
        scaled = values
    else:
        scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return PIL.Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _decode_data_uri(uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep:
        raise MediaDecodeError(f"data URI {describe_source(uri)} has no ',' before its payload.", uri)
    try:
        if header.endswith(";base64"):
            return base64.b64decode(payload, validate=True)
        return urllib.parse.unquote_to_bytes(payload)
    except (binascii.Error, ValueError) as exc:
        raise MediaDecodeError(f"data URI {describe_source(uri)} is not valid base64 ({exc}).", uri) from exc


def _check_local(path: Path, policy: MediaPolicy, source: object) -> Path:
    """Apply the local-file policy and return the resolved path of an existing file."""
    if not policy.allow_local:
        raise MediaPolicyError(
            f"reading local file {describe_source(source)} is disabled by the media policy; pass the media as "
            "bytes or a data: URI, or use a MediaPolicy with allow_local=True.",
            source,
        )
    resolved = path.expanduser().resolve()
    if policy.local_root is not None:
        root = Path(policy.local_root).expanduser().resolve()
        if not resolved.is_relative_to(root):
            raise MediaPolicyError(
                f"local file {describe_source(source)} lies outside the allowed folder {root}; move it there "
                "or change MediaPolicy.local_root.",
                source,
            )
    if not resolved.is_file():
        raise MediaNotFoundError(f"media file {describe_source(source)} does not exist (or is not a file).", source)
    size = resolved.stat().st_size
    if size > policy.max_bytes:
        raise MediaPolicyError(
            f"media file {describe_source(source)} is {size} bytes, over the policy's max_bytes "
            f"({policy.max_bytes}); shrink it or raise MediaPolicy.max_bytes.",
            source,
        )
    return resolved


def _read_local(path: Path, policy: MediaPolicy, source: object) -> bytes:
    return _check_local(path, policy, source).read_bytes()


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for a globally routable unicast address. IPv6 forms that carry an IPv4 address (IPv4-mapped,
    IPv4-compatible, 6to4, NAT64 64:ff9b::/96) are judged by that address; Teredo and local-use NAT64
    (64:ff9b:1::/48) are never public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_public_address(embedded)
        if address.teredo is not None or address in _NAT64_LOCAL:
            return False
        if address in _NAT64 or int(address) >> 32 == 0:  # NAT64 well-known prefix, IPv4-compatible ::a.b.c.d
            return is_public_address(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return bool(address.is_global) and not address.is_multicast


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def _check_host(url: str, policy: MediaPolicy) -> str | None:
    """Apply the host policy; returns the checked address to connect to (None: resolve as usual)."""
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or ""
    if not host:
        raise MediaFetchError(f"URL {describe_source(url)} has no host.", url)
    if policy.allowed_domains is not None:
        allowed = [d.lower().lstrip(".") for d in policy.allowed_domains]
        if not any(host == d or host.endswith("." + d) for d in allowed):
            raise MediaPolicyError(
                f"URL {describe_source(url)}: host {host!r} is not in the media policy's allowed_domains "
                f"{allowed}; add it there or pass the image as bytes.",
                url,
            )
    if policy.allow_private_hosts:
        return None
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (UnicodeError, OSError, ValueError) as exc:
        raise MediaFetchError(f"URL {describe_source(url)}: cannot resolve host {host!r} ({exc}).", url) from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for address in addresses:
        if not is_public_address(address):
            raise MediaPolicyError(
                f"URL {describe_source(url)} points to a non-public address ({address}); the media policy refuses "
                "those against request forgery. Use MediaPolicy(allow_private_hosts=True) if you trust the input.",
                url,
            )
    if not addresses:
        raise MediaFetchError(f"URL {describe_source(url)}: host {host!r} has no address.", url)
    # Connect to the address that was checked: a second lookup could answer differently (DNS rebinding).
    return str(addresses[0])


def _pinned(url: str, address: str | None) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL to request (host replaced by the checked address), its Host header and TLS server name."""
    if address is None:
        return url, {}, {}
    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = literal + (f":{parsed.port}" if parsed.port else "")
    pinned = urllib.parse.urlunparse(parsed._replace(netloc=netloc))
    header = host + (f":{parsed.port}" if parsed.port else "")
    extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
    return pinned, {"Host": header}, extensions


def _fetch(url: str, policy: MediaPolicy) -> bytes:
    """Fetch ``url`` within ``policy.timeout`` seconds in all: the download runs in a helper thread, and the
    caller stops waiting at the deadline whatever the server does (trickling bytes, stalling)."""
    if not policy.allow_remote:
        raise MediaPolicyError(
            f"fetching {describe_source(url)} is disabled by the media policy; download it yourself and pass "
            "bytes, or use a MediaPolicy with allow_remote=True.",
            url,
        )
    deadline = time.monotonic() + policy.timeout
    results: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def work() -> None:
        try:
            results.put((True, _download(url, policy, deadline, stop)))
        except BaseException as exc:
            results.put((False, exc))

    threading.Thread(target=work, name="qwenvl-media-fetch", daemon=True).start()
    try:
        ok, value = results.get(timeout=policy.timeout + 0.05)
    except queue.Empty:
        stop.set()
        raise MediaFetchError(
            f"fetching {describe_source(url)} took longer than the media policy's timeout ({policy.timeout:g} s); "
            "the server is too slow, or raise MediaPolicy.timeout.",
            url,
        ) from None
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


def _download(url: str, policy: MediaPolicy, deadline: float, stop: threading.Event) -> bytes:
    import httpx

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or stop.is_set():
            raise MediaFetchError(
                f"fetching {describe_source(url)} took longer than the media policy's timeout ({policy.timeout:g} s).",
                url,
            )
        return remaining

    current = url
    # No proxies from the environment when the address is pinned: a proxy would resolve the name again.
    with httpx.Client(timeout=policy.timeout, follow_redirects=False, trust_env=policy.allow_private_hosts) as client:
        for _ in range(policy.max_redirects + 1):
            address = _check_host(current, policy)
            target, headers, extensions = _pinned(current, address)
            try:
                extensions["timeout"] = httpx.Timeout(left()).as_dict()
                request = client.build_request("GET", target, headers=headers, extensions=extensions)
                response = client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        current = urllib.parse.urljoin(current, location)
                        if not current.lower().startswith(("http://", "https://")):
                            raise MediaFetchError(f"{describe_source(url)} redirects to a non-HTTP URL.", url)
                        continue
                    if response.status_code != 200:
                        raise MediaFetchError(
                            f"fetching {describe_source(url)} failed with HTTP {response.status_code}.", url
                        )
                    chunks: list[bytes] = []
                    total = 0
                    for chunk in response.iter_bytes():
                        left()
                        total += len(chunk)
                        if total > policy.max_bytes:
                            raise MediaPolicyError(
                                f"{describe_source(url)} is over the policy's max_bytes ({policy.max_bytes}); "
                                "raise MediaPolicy.max_bytes or use a smaller image.",
                                url,
                            )
                        chunks.append(chunk)
                    return b"".join(chunks)
                finally:
                    response.close()
            except httpx.TimeoutException as exc:
                raise MediaFetchError(
                    f"fetching {describe_source(url)} took longer than the media policy's timeout "
                    f"({policy.timeout:g} s); the server is too slow, or raise MediaPolicy.timeout.",
                    url,
                ) from exc
            except httpx.HTTPError as exc:
                raise MediaFetchError(f"fetching {describe_source(url)} failed: {exc}", url) from exc
    raise MediaFetchError(f"fetching {describe_source(url)} took more than {policy.max_redirects} redirects.", url)


def _open_video_file(
    source: str | os.PathLike[str], policy: MediaPolicy | None
) -> tuple[int, float, Callable[[list[int]], list[PIL.Image.Image]]]:
    """(frame count, frames per second, a reader of the frames at given indices) of a local video file.

    Only the sampled frames are kept in memory, whatever the video's length; a frame larger than the policy's
    ``max_image_pixels`` is refused before any is decoded."""
    policy = policy or DEFAULT_POLICY
    text = os.fspath(source)
    if text.startswith("file://"):
        text = urllib.parse.unquote(urllib.parse.urlparse(text).path)
    elif "://" in text[:16]:
        raise UnsupportedMediaError(
            f"video {describe_source(source)}: only local video files are read; download it first.", source
        )
    path = _check_local(Path(text), policy, source)
    cv2 = require("cv2", "video")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise MediaDecodeError(f"video {describe_source(source)} could not be opened as a video.", source)
        video_fps = float(capture.get(cv2.CAP_PROP_FPS)) or 2.0
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        capture.release()
    too_big = pixel_limit_error((width, height), policy, source, what="video frame")
    if too_big is not None:
        raise too_big

    def read(indices: list[int]) -> list[PIL.Image.Image]:
        wanted = set(indices)
        got: dict[int, PIL.Image.Image] = {}
        last: PIL.Image.Image | None = None
        capture = cv2.VideoCapture(str(path))
        try:
            for index in range(max(indices) + 1):
                if not capture.grab():  # the container counted more frames than it holds
                    break
                if index in wanted:
                    ok, frame = capture.retrieve()
                    if ok:
                        last = got[index] = PIL.Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        finally:
            capture.release()
        if last is None:
            raise MediaDecodeError(f"video {describe_source(source)} has no decodable frames.", source)
        out: list[PIL.Image.Image] = []
        for index in indices:  # a frame past the real end repeats the last one read
            out.append(got.get(index) or (out[-1] if out else last))
        return out

    if total <= 0:
        raise MediaDecodeError(f"video {describe_source(source)} reports no frames; is the file complete?", source)
    return total, video_fps, read


# ---- encoding images for the wire -----------------------------------------------------------------------------

#: the JPEG quality of photo-like images sent over the wire (a JPEG brought down to size, or a photo in memory)
JPEG_QUALITY = 95
#: an image whose 48 x 48 sample holds more distinct colours than this is photo-like (photos, renders, noise:
#: measured over 2304 samples, photos had over 1024, rendered and scanned text pages 10 to 30, a grey scan 256 at most)
_PHOTO_COLORS = 512


def photo_like(image: PIL.Image.Image) -> bool:
    """Whether ``image`` is photo-like (photos, renders, noise: many distinct colours) rather than text, line
    art, a scan or a screenshot (few), told by a 48 x 48 nearest-pixel sample (about 0.7 ms; PNG-encoding a
    strip to tell took 3 ms). Small images (64 KB raw or less) count as not photo-like."""
    if image.width * image.height * 3 <= 64 * 1024:
        return False
    sample = image.convert("RGB").resize((48, 48), PIL.Image.Resampling.NEAREST)
    return sample.getcolors(maxcolors=_PHOTO_COLORS) is None


def png_data_uri(image: PIL.Image.Image) -> str:
    """A lossless PNG data URI of ``image`` (fast compression)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def jpeg_data_uri(image: PIL.Image.Image, quality: int = JPEG_QUALITY) -> str:
    """A JPEG data URI of ``image``."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return EncodedImage("image/jpeg", buffer.getvalue()).data_uri()


def image_data_uri(image: PIL.Image.Image, *, lossless: bool = False) -> str:
    """A data URI of ``image``, encoded by what it holds: text, line art and screenshots as PNG (lossless, a
    fraction of the raw bytes); photo-like images as JPEG at `JPEG_QUALITY` (PNG would spend CPU time to save
    little), or with ``lossless`` as uncompressed BMP (the receiver sees the same pixels)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if not photo_like(rgb):
        return png_data_uri(rgb)
    if not lossless:
        return jpeg_data_uri(rgb)
    buffer = io.BytesIO()
    rgb.save(buffer, format="BMP")
    return "data:image/bmp;base64," + base64.b64encode(buffer.getvalue()).decode()
