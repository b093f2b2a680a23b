"""What a server engine sends: image files as they were read where the server decodes them to the same pixels;
other images encoded once per request by what they hold (text and line art lossless, photo-like images as JPEG,
or lossless when asked); a JPEG photo brought down to its planned size as a JPEG again."""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path

import PIL.Image

from qwenvl import ChatRequest, Image, Message, Text
from qwenvl.engine.prepare import EngineDefaults, RequestPreparer
from qwenvl.engine.server_images import SentImages, image_uris
from qwenvl.media import image_data_uri, load_image, load_image_encoded
from tests.helpers import make_image


def _photo(width: int, height: int, seed: int = 0) -> PIL.Image.Image:
    """Photo-like pixels: noise on a gradient (PNG cannot shrink it much)."""
    rng = random.Random(seed)
    data = bytes(
        min(255, (x * 255 // width + rng.randrange(64))) for _ in range(height) for x in range(width) for _ in range(3)
    )
    return PIL.Image.frombytes("RGB", (width, height), data)


def _decode(uri: str) -> tuple[str, PIL.Image.Image]:
    head, data = uri.split(",", 1)
    return head, PIL.Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def _image_uris(prep, resized, server_pixels=None, sent=None, lossless=False):  # noqa: ANN001, ANN202
    """(uris, whether any image was left to the server), as the tests below read them."""
    sent = SentImages() if sent is None else sent
    uris = image_uris(prep, resized=resized, server_pixels=server_pixels, sent=sent, lossless=lossless)
    return uris, sent.server_sized


def test_encoding_is_chosen_by_content() -> None:
    photo = _photo(400, 300)
    head, back = _decode(image_data_uri(photo))  # photo-like: JPEG (high quality)
    assert head == "data:image/jpeg;base64" and back.size == photo.size
    head, back = _decode(image_data_uri(photo, lossless=True))  # unless lossless is asked for: BMP, exact
    assert head == "data:image/bmp;base64" and back.tobytes() == photo.tobytes()
    page = make_image(400, 300, seed=3)  # flat areas and lines: PNG pays
    head, back = _decode(image_data_uri(page))
    assert head == "data:image/png;base64" and back.tobytes() == page.tobytes()
    assert len(image_data_uri(page)) < len(image_data_uri(photo, lossless=True)) / 5
    small = _photo(64, 64)  # small: PNG whatever it holds
    assert image_data_uri(small).startswith("data:image/png;base64")


def _preparer(tiny_model: Path) -> RequestPreparer:
    return RequestPreparer.from_pretrained(
        str(tiny_model), defaults=EngineDefaults.create(max_pixels=64 * 784), max_model_len=4096, extra="vllm"
    )


def test_images_are_encoded_once_per_request(tiny_model: Path) -> None:
    preparer = _preparer(tiny_model)
    big, small = _photo(1000, 800, 1), make_image(56, 56, 2)
    prep = preparer.prepare(ChatRequest([Message("user", [Image(big), Image(small), Text("compare")])]))
    sent = SentImages()
    first = _image_uris(prep, resized=False, sent=sent)[0]
    again = _image_uris(prep, resized=False, sent=sent)[0]
    assert all(a is b for a, b in zip(again, first, strict=True))  # a retry: no encoding
    planned = preparer.profile.smart_resize(800, 1000, *prep.image_limits[0])
    # a photo in memory goes as a JPEG of its planned size, even to a server that takes the processor's limits
    # (its processor keeps that size); with lossless asked for, the original goes
    assert first[0].startswith("data:image/jpeg;base64,") and _decode(first[0])[1].size == planned[::-1]
    assert _decode(_image_uris(prep, resized=False, lossless=True)[0][0])[1].size == (1000, 800)
    resized = _image_uris(prep, resized=True, sent=sent)[0]  # the resend without processor kwargs: at the plan
    assert _decode(resized[0])[1].size == planned[::-1]
    assert resized[1] is first[1]  # already at its planned size: the same image, the same encoding


def test_files_travel_as_they_were_read(tiny_model: Path, tmp_path: Path) -> None:
    preparer = _preparer(tiny_model)
    photo = _photo(1000, 800, 4)
    jpeg, gray, rgba = tmp_path / "photo.jpg", tmp_path / "gray.jpg", tmp_path / "logo.png"
    photo.save(jpeg, quality=90)
    photo.convert("L").save(gray, quality=90)
    photo.convert("RGBA").save(rgba)
    small = tmp_path / "small.png"
    make_image(56, 56, 5).save(small)
    parts = [Image(jpeg), Image(gray), Image(rgba), Image(small), Text("all")]
    prep = preparer.prepare(ChatRequest([Message("user", parts)]))
    sent = SentImages()
    uris = _image_uris(prep, resized=False, sent=sent)[0]
    as_read = [p.read_bytes() for p in (jpeg, gray)]
    assert [base64.b64decode(u.split(",", 1)[1]) for u in uris[:2]] == as_read  # the bytes, unchanged
    assert uris[0].startswith("data:image/jpeg;base64,")
    # RGBA is composited on white here (a server would composite on its own background) and re-encoded: photo-like
    # pixels as JPEG, or exact when lossless is asked for
    planned = preparer.profile.smart_resize(800, 1000, *prep.image_limits[2])[::-1]
    assert uris[2].startswith("data:image/jpeg;base64,") and _decode(uris[2])[1].size == planned
    exact = _image_uris(prep, resized=False, lossless=True)[0][2]
    assert _decode(exact)[1].tobytes() == load_image(rgba).tobytes()
    assert base64.b64decode(uris[3].split(",", 1)[1]) == small.read_bytes()
    # no processor limits: each at its planned size; the JPEG photos as JPEGs again, the rest lossless
    resized = _image_uris(prep, resized=True, sent=sent)[0]
    for uri, (lo, hi) in zip(resized[:3], prep.image_limits[:3], strict=True):
        assert _decode(uri)[1].size == preparer.profile.smart_resize(800, 1000, lo, hi)[::-1]
    assert resized[0].startswith("data:image/jpeg;base64,") and resized[1].startswith("data:image/jpeg;base64,")
    assert resized[2].startswith("data:image/jpeg;base64,")  # photo-like in memory: JPEG
    lossless = _image_uris(prep, resized=True, lossless=True)[0]  # every image encoded here lossless
    assert lossless[0].startswith("data:image/bmp;base64,") and lossless[2].startswith("data:image/bmp;base64,")
    assert resized[3] is uris[3]  # already at its planned size


def test_exif_orientation_is_applied_to_files_only(tmp_path: Path) -> None:
    photo = _photo(300, 200, 6)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # turned 90 degrees: viewers (and vLLM's server) show it 200 wide, 300 high
    path = tmp_path / "turned.jpg"
    photo.save(path, quality=95, exif=exif)
    image, original = load_image_encoded(path)
    assert image.size == (200, 300) and original is not None and original.data == path.read_bytes()
    assert load_image(PIL.Image.open(path)).size == (300, 200)  # a PIL image is taken as it is


def test_a_server_engine_sends_files_without_decoding_them(tiny_model: Path, tmp_path: Path) -> None:
    import pytest

    from qwenvl.errors import MediaDecodeError

    photo = _photo(900, 600, 7)
    exif = PIL.Image.Exif()
    exif[0x0112] = 6
    whole, turned, cut = tmp_path / "whole.jpg", tmp_path / "turned.jpg", tmp_path / "cut.jpg"
    photo.save(whole, quality=90)
    photo.save(turned, quality=90, exif=exif)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    lazy, original = load_image_encoded(whole, decode=False)
    assert original is not None and lazy.size == (900, 600)
    assert lazy.tobytes() == load_image(whole).tobytes()  # the pixels, when asked for, are the same
    for decode in (True, False):  # a file cut short is decoded, and fails here, naming it
        with pytest.raises(MediaDecodeError, match="cut.jpg"):
            load_image_encoded(cut, decode=decode)
    preparer = _preparer(tiny_model)
    preparer.decode_images = False
    request = ChatRequest([Message("user", [Image(whole), Image(turned), Text("two")])])
    prep = preparer.prepare(request)
    assert prep.image_tokens == _preparer(tiny_model).prepare(request).image_tokens
    assert base64.b64decode(_image_uris(prep, resized=False)[0][1].split(",", 1)[1]) == turned.read_bytes()
    # brought down for a server without processor limits: decoded at a reduced scale, upright, at the plan
    for uri, size in zip(_image_uris(prep, resized=True)[0], [(600, 900), (900, 600)], strict=True):
        head, back = _decode(uri)
        assert (
            head == "data:image/jpeg;base64"
            and back.size == preparer.profile.smart_resize(*size, *prep.image_limits[0])[::-1]
        )


def test_a_server_with_the_same_limits_resizes_the_files_itself(tiny_model: Path, tmp_path: Path) -> None:
    preparer = _preparer(tiny_model)  # max_pixels 64 * 784
    preparer.decode_images = False
    photo = tmp_path / "photo.jpg"
    _photo(900, 600, 8).save(photo, quality=90)
    prep = preparer.prepare(ChatRequest([Message("user", [Image(photo), Text("one")])]))
    lo, hi = prep.image_limits[0]
    uris, left = _image_uris(prep, resized=True, server_pixels=(lo, hi))
    assert left and base64.b64decode(uris[0].split(",", 1)[1]) == photo.read_bytes()
    uris, left = _image_uris(prep, resized=True, server_pixels=(lo, 4 * hi))  # a server that would size it larger
    assert not left and _decode(uris[0])[1].size == preparer.profile.smart_resize(600, 900, lo, hi)[::-1]


def test_request_bodies_carry_media_uris_verbatim_and_valid_json() -> None:
    """Data URIs go into the JSON body as they are (not scanned by the JSON encoder); the body parses to exactly
    what the JSON encoder would have written, whatever the text around them holds."""
    from qwenvl.engine.server_wire import _json_with_media, _placeholder

    media: dict[str, str] = {}
    jpeg = "data:image/jpeg;base64," + base64.b64encode(bytes(range(256)) * 50).decode()
    odd = 'data:text/x-"odd"\\;base64,AAAA'  # a URI that needs escaping is escaped
    tricky = 'quotes " backslash \\ NUL \x00 tag \x00qwenvl-media- unicode é 漢'
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": tricky}, {"url": _placeholder(jpeg, media)}]},
            {"role": "user", "content": [{"url": _placeholder(odd, media)}, {"url": _placeholder(jpeg, media)}]},
        ],
        "max_tokens": 3,
    }
    expected = json.loads(json.dumps(body))
    for part in (expected["messages"][0]["content"][1], *expected["messages"][1]["content"]):
        part["url"] = media[part["url"]]
    sent = _json_with_media(body, media)
    assert json.loads(sent) == expected
    assert f'"{jpeg}"'.encode() in sent  # verbatim
