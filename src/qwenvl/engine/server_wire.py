"""The OpenAI wire format of `VLLMServerEngine`: one concern, what goes over HTTP and how it reads back.

A prepared request becomes a ``/chat/completions`` body (messages with media as data URIs, sampling, vLLM's
``mm_processor_kwargs``, ``structured_outputs`` and ``media_io_kwargs``); an answer, whole or as server-sent
events, becomes a `ChatResult` or `ChatChunk`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from qwenvl import media
from qwenvl.engine.prepare import PreparedRequest
from qwenvl.errors import ServerError
from qwenvl.prompt import to_template_messages, with_system_prompt

__all__ = ["DONE", "Body", "completion_message", "refuses_mm_kwargs", "request_body", "stream_event"]

#: placeholders for media URIs in a request body: a NUL (which no JSON text holds unescaped) and a random tag
_MEDIA_TAG = f"\x00qwenvl-media-{secrets.token_hex(8)}-"
#: what `stream_event` gives for the end of a stream
DONE = "[DONE]"


class Body(NamedTuple):
    """A request body as sent."""

    content: bytes  #: the JSON
    mm_kwargs: bool  #: whether it carries mm_processor_kwargs


def request_body(
    prep: PreparedRequest,
    uris: Sequence[str],
    *,
    model: str,
    stream: bool,
    with_kwargs: bool,
    return_token_ids: bool,
) -> Body:
    """The ``/chat/completions`` body of ``prep``, its images as the data ``uris``; ``with_kwargs`` sends the
    processor's pixel limits (a server started with ``--trust-request-mm-kwargs`` takes them)."""
    options = prep.request.sampling
    media_uris: dict[str, str] = {}
    body: dict[str, Any] = {
        "model": prep.lora or model,
        "messages": openai_messages(prep, uris, media_uris),
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
        "top_p": options.top_p,
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
        "stream": stream,
    }
    if return_token_ids:
        body["return_token_ids"] = True
    if options.stop:
        body["stop"] = list(options.stop)
    if options.seed is not None:
        body["seed"] = options.seed
    if prep.mm_data and with_kwargs:
        body["mm_processor_kwargs"] = prep.mm_processor_kwargs
    if prep.videos:
        # the frames were sampled here: the server keeps them, at the rate they were sampled at
        meta = prep.video_metadata[0]
        body["media_io_kwargs"] = {
            "video": {
                "fps": meta["fps"],
                "frames_indices": meta["frames_indices"],
                "total_num_frames": meta["total_num_frames"],
            }
        }
    if prep.constraint is not None:
        body["structured_outputs"] = {"json": prep.constraint}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return Body(_json_with_media(body, media_uris), mm_kwargs="mm_processor_kwargs" in body)


def openai_messages(prep: PreparedRequest, uris: Sequence[str], media_uris: dict[str, str]) -> list[dict[str, Any]]:
    """The request as OpenAI chat messages, with the images' data ``uris`` in their places: each media URI as a
    placeholder, the key under which it is put in ``media_uris`` (see `_json_with_media`)."""
    images = iter(uris)
    out = []
    native = prep.profile.template_tools  # tool turns go as OpenAI tool messages to a template that reads them
    messages = to_template_messages(with_system_prompt(prep.request.messages, prep.system_prompt), native_tools=native)
    for n, msg in enumerate(messages):
        content = msg["content"]
        if isinstance(content, list):
            content = [_media_part(part, images, prep.videos, media_uris) for part in content]
        item: dict[str, Any] = {"role": msg["role"], "content": content}
        if msg["role"] == "tool":
            item["tool_call_id"] = f"call_{n}"
        if msg.get("tool_calls"):
            item["tool_calls"] = [
                {
                    "id": f"call_{n}_{k}",
                    "type": "function",
                    "function": {
                        "name": c["function"]["name"],
                        "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False),
                    },
                }
                for k, c in enumerate(msg["tool_calls"])
            ]
        out.append(item)
    return out


def _media_part(
    part: dict[str, Any], images: Iterator[Any], videos: Sequence[Any], media_uris: dict[str, str]
) -> dict[str, Any]:
    """An OpenAI content part: an image as its data URI; the video as its sampled frames, each a lossless PNG, in
    vLLM's frame-sequence data URI (``video/jpeg``: comma-separated base64 frames, read with PIL). The URI is
    put in ``media_uris`` under a placeholder, and the part holds the placeholder."""
    if part["type"] == "image":
        return {"type": "image_url", "image_url": {"url": _placeholder(next(images), media_uris)}}
    if part["type"] == "video":
        import PIL.Image

        frames = [media.png_data_uri(PIL.Image.fromarray(frame)).split(",", 1)[1] for frame in videos[0]]
        uri = "data:video/jpeg;base64," + ",".join(frames)
        return {"type": "video_url", "video_url": {"url": _placeholder(uri, media_uris)}}
    return part


def _placeholder(uri: str, media_uris: dict[str, str]) -> str:
    key = f"{_MEDIA_TAG}{len(media_uris)}"
    media_uris[key] = uri
    return key


def _json_with_media(body: dict[str, Any], media_uris: dict[str, str]) -> bytes:
    """``body`` as JSON with each placeholder of ``media_uris`` replaced by its URI. A base64 data URI (as built
    here) needs no escaping; the JSON encoder would still scan it a character at a time (1.5 ms for a 250 KB
    photo, for every request), so it is put in as it is. A URI that might need escaping is encoded."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if not media_uris:
        return text.encode()
    pieces = []
    for key, uri in media_uris.items():
        quoted = json.dumps(key)
        head, sep, text = text.partition(quoted)
        assert sep, "a media placeholder is missing from the request body"
        comma = uri.find(",")  # after it, base64 (made here): no control characters; partition would copy it
        plain = uri.isascii() and comma > 0 and uri[:comma].isprintable() and '"' not in uri and "\\" not in uri
        pieces += [head, f'"{uri}"' if plain else json.dumps(uri)]
    pieces.append(text)
    return "".join(pieces).encode()


def completion_message(data: Any, url: str) -> tuple[dict[str, Any], str, list[int] | None]:
    """(choice, text, prompt token ids) of a chat completion; `ServerError` when ``data`` is not one."""
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        if not isinstance(text, str):
            raise TypeError("content is not a string")
        return choice, text, data.get("prompt_token_ids")
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ServerError(
            f"{url} answered without a chat completion ({type(exc).__name__}: {exc}); is it a vLLM server?",
            url=url,
        ) from exc


def stream_event(line: str, url: str) -> dict[str, Any] | str | None:
    """One line of a server-sent event stream: its JSON object, `DONE` at the end, None for a line that is not
    data; `ServerError` for an event that is not a JSON object or that carries an error."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if payload == DONE:
        return DONE
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise ServerError(f"{url} sent a stream event that is not JSON: {payload[:200]!r}") from exc
    if not isinstance(data, dict):
        raise ServerError(f"{url} sent a stream event that is not an object: {payload[:200]!r}")
    if "error" in data and not data.get("choices"):
        raise ServerError(f"{url}: {data['error']}", url=url)
    return data


def refuses_mm_kwargs(error: ServerError) -> bool:
    """Whether ``error`` is a server refusing per-request processor kwargs."""
    return error.status == 400 and "mm_processor_kwargs" in str(error)
