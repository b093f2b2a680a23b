"""How `VLLMServerEngine` sends a request's images: one concern, each image as a data URI, chosen so that the
server processes the pixels that were planned and the client spends as little as it can.

An image sent at the size it was read goes as its file's bytes, unchanged, where it came from a JPEG, PNG or
WebP file (the server decodes the same pixels). An image the server cannot be trusted to resize (it takes no
processor limits) is brought to its planned size here first, unless the server's own limits size it the same
(then the file goes as it is). A JPEG photo brought down here goes as a JPEG again, decoded at the smallest
scale that still covers its planned size. A photo-like image in memory goes as a high-quality JPEG of its
planned size (the server's processor keeps that size), whatever the server. Everything else is encoded by what
it holds (`qwenvl.media.image_data_uri`): text, line art and screenshots lossless. Where the engine is asked to
send every image lossless, nothing is encoded lossy here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qwenvl import media
from qwenvl.engine.prepare import PreparedRequest
from qwenvl.errors import MediaDecodeError

__all__ = ["SentImages", "image_uris", "processor_pixels"]


@dataclass
class SentImages:
    """A request's images as sent so far, kept while the request is in flight: a resend (a retry, or without
    processor limits) reuses their encodings."""

    #: (image index, resized here) -> (the image encoded, its data URI)
    uris: dict[tuple[int, bool], tuple[Any, str]] = field(default_factory=dict)
    #: whether the last sending left an image to the server's own limits
    server_sized: bool = False


def image_uris(
    prep: PreparedRequest,
    *,
    resized: bool,
    server_pixels: tuple[int, int] | None = None,
    sent: SentImages | None = None,
    lossless: bool = False,
) -> list[str]:
    """The request's images as data URIs, each encoded once per request (``sent`` keeps them, and records
    whether any was left to the server to resize).

    ``resized`` (a server that takes no processor limits) brings each image to its planned size first, unless
    ``server_pixels``, the server's own (min_pixels, max_pixels), size it the same. ``lossless`` sends every
    image that is encoded here losslessly."""
    sent = sent if sent is not None else SentImages()
    originals = prep.originals or [None] * len(prep.images)
    profile = prep.profile
    uris = []
    left_to_server = False
    for k, (image, (lo, hi), original) in enumerate(zip(prep.images, prep.image_limits, originals, strict=True)):
        planned = profile.smart_resize(image.height, image.width, lo, hi)
        height, width = planned
        as_is = not resized or (width, height) == image.size
        if not as_is and original is not None and server_pixels is not None:
            as_is = profile.smart_resize(image.height, image.width, *server_pixels) == planned
            left_to_server = left_to_server or as_is
        key = (k, not as_is)
        hit = sent.uris.get(key)
        if hit is not None and hit[0] is image:
            uris.append(hit[1])
            continue
        try:
            if original is None and not lossless and media.photo_like(image):
                # a photo in memory goes as a JPEG of its planned size: the server's processor keeps that size,
                # and the client encodes (and sends) a fraction of the pixels
                small = media.resize_image(image, lo, hi, factor=profile.factor, fast=True)
                uri = media.jpeg_data_uri(small)
            elif as_is:
                uri = original.data_uri() if original is not None else media.image_data_uri(image, lossless=lossless)
            elif original is not None and original.mime == "image/jpeg" and not lossless:
                uri = media.jpeg_data_uri(media.load_jpeg_at(original.data, (width, height)))
            else:
                resized_image = media.resize_image(image, lo, hi, factor=profile.factor)
                uri = media.image_data_uri(resized_image, lossless=lossless)
        except (OSError, SyntaxError, ValueError) as exc:
            raise MediaDecodeError(
                f"image {k + 1} of the request could not be decoded ({exc}); the file may be truncated or corrupt.",
                image,
            ) from exc
        sent.uris[key] = (image, uri)
        uris.append(uri)
    sent.server_sized = left_to_server
    return uris


def processor_pixels(processor: Any) -> tuple[int, int] | None:
    """The image processor's (min_pixels, max_pixels) from the model's preprocessor config, if it says."""
    size = getattr(getattr(processor, "image_processor", None), "size", None)
    try:
        lo, hi = size["shortest_edge"], size["longest_edge"]  # type: ignore[index]
    except (KeyError, TypeError):
        return None
    return (int(lo), int(hi)) if lo and hi else None
