"""Hostile media: slow and endless servers, DNS rebinding, private addresses in IPv6 clothing, decompression
bombs and high-bit-depth images. Every fetch ends by its deadline; nothing private is ever contacted."""

from __future__ import annotations

import io
import ipaddress
import socket
import time

import httpx
import numpy as np
import pytest
from PIL import Image as PILImage

from qwenvl.errors import ImageSizeError, MediaFetchError, MediaPolicyError
from qwenvl.media import MediaPolicy, is_public_address, load_image, read_source_bytes
from tests.helpers import make_image, png_bytes
from tests.reliability.fake_server import Exchange, FakeServer

LOCAL = MediaPolicy(allow_private_hosts=True, timeout=1.0)
PNG = png_bytes(make_image(64, 48))


def _image_server(mode: str):  # noqa: ANN202
    def handler(ex: Exchange) -> None:
        if mode == "trickle":
            ex.http.send_response(200)
            ex.http.send_header("Content-Type", "image/png")
            ex.http.send_header("Content-Length", str(len(PNG)))
            ex.http.end_headers()
            ex.trickle(PNG, 0.1, limit_s=20)
        elif mode == "stall-headers":
            time.sleep(6)
            ex.send(200, PNG)
        elif mode == "endless":
            ex.http.send_response(200)
            ex.http.send_header("Content-Type", "image/png")
            ex.http.end_headers()
            end = time.monotonic() + 20
            while time.monotonic() < end and ex.write(b"\0" * 1024):
                time.sleep(0.01)
        elif mode == "redirect-loop":
            ex.send(302, b"", {"Location": ex.path + "x"})
        elif mode == "redirect-ftp":
            ex.send(302, b"", {"Location": "ftp://example.com/x.png"})
        elif mode == "huge":
            ex.send(200, b"\0" * (2 * 1024 * 1024))
        else:
            ex.send(200, PNG, {"Content-Type": "image/png"})

    return handler


@pytest.mark.parametrize("mode", ["trickle", "stall-headers", "endless"])
def test_slow_servers_are_cut_off_at_the_deadline(mode: str) -> None:
    with FakeServer(_image_server(mode)) as server:
        start = time.monotonic()
        with pytest.raises(MediaFetchError, match="timeout"):
            load_image(server.root + "/img.png", LOCAL)
        assert time.monotonic() - start < 1.6


@pytest.mark.parametrize(
    ("mode", "error", "words"),
    [
        ("redirect-loop", MediaFetchError, "redirects"),
        ("redirect-ftp", MediaFetchError, "non-HTTP"),
        ("huge", MediaPolicyError, "max_bytes"),
    ],
)
def test_bad_answers_are_typed_errors(mode: str, error: type, words: str) -> None:
    policy = MediaPolicy(allow_private_hosts=True, timeout=3.0, max_bytes=1024 * 1024)
    with FakeServer(_image_server(mode)) as server, pytest.raises(error, match=words):
        load_image(server.root + "/img.png", policy)


def test_a_good_local_fetch_still_works() -> None:
    with FakeServer(_image_server("ok")) as server:
        assert load_image(server.root + "/img.png", LOCAL).size == (64, 48)


def test_private_servers_are_never_contacted_by_default() -> None:
    with FakeServer(_image_server("ok")) as server:
        for url in (server.root + "/img.png", server.root.replace("127.0.0.1", "localhost") + "/img.png"):
            with pytest.raises(MediaPolicyError, match="non-public"):
                load_image(url)
        assert server.hits == {}


def test_dns_rebinding_connects_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The name answers a public address to the check and 127.0.0.1 after: the fetch must go to the first."""
    calls: list[str] = []

    def fake_getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list:
        calls.append(host)
        address = "93.184.216.34" if len(calls) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, 80))]

    seen: list[httpx.Request] = []

    def no_network(self: object, request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError("test transport: no connection made", request=request)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(httpx.HTTPTransport, "handle_request", no_network)
    for url, sni in (("http://rebind.example/x.png", None), ("https://rebind.example:8443/x.png", "rebind.example")):
        calls.clear()
        seen.clear()
        with pytest.raises(MediaFetchError):
            read_source_bytes(url)
        assert calls == ["rebind.example"]  # resolved once
        [request] = seen
        assert request.url.host == "93.184.216.34"  # connected to what was checked
        assert request.headers["host"].startswith("rebind.example")
        assert request.extensions.get("sni_hostname") == sni


PRIVATE_FORMS = [
    "127.0.0.1",
    "10.1.2.3",
    "169.254.169.254",
    "100.64.0.1",
    "::1",
    "fe80::1",
    "fc00::1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "64:ff9b:1::1",
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "ff02::1",
]
PUBLIC_FORMS = [
    "93.184.216.34",
    "2606:4700:4700::1111",
    "64:ff9b::5db8:d822",
    "::ffff:93.184.216.34",
    "2002:5db8:d822::",
]


@pytest.mark.parametrize("text", PRIVATE_FORMS)
def test_private_ranges_in_every_form_are_private(text: str) -> None:
    assert not is_public_address(ipaddress.ip_address(text))


@pytest.mark.parametrize("text", PUBLIC_FORMS)
def test_public_addresses_stay_public(text: str) -> None:
    assert is_public_address(ipaddress.ip_address(text))


@pytest.mark.parametrize("text", ["::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "::127.0.0.1"])
def test_ipv6_literal_urls_to_private_ranges_are_refused(text: str) -> None:
    with pytest.raises(MediaPolicyError, match="non-public"):
        read_source_bytes(f"http://[{text}]/x.png")


def test_a_huge_canvas_is_refused_from_its_header() -> None:
    buf = io.BytesIO()
    PILImage.new("1", (13000, 13000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 100_000
    with pytest.raises(ImageSizeError, match="max_image_pixels"):
        load_image(buf.getvalue())
    with pytest.raises(ImageSizeError, match="max_image_pixels"):
        load_image(PNG, MediaPolicy(max_image_pixels=1000))
    assert load_image(PNG, MediaPolicy(max_image_pixels=64 * 48)).size == (64, 48)


def test_sixteen_bit_images_are_scaled_not_clipped() -> None:
    ramp = (np.arange(256 * 64, dtype=np.uint32).reshape(64, 256) * 4).astype(np.uint16)  # 0..65532
    buf = io.BytesIO()
    PILImage.fromarray(ramp).save(buf, format="PNG")
    image = load_image(buf.getvalue())
    gray = np.asarray(image)[..., 0].astype(int)
    expected = np.rint(ramp / 257).astype(int)
    assert np.abs(gray - expected).max() <= 1
    assert (gray == 255).mean() < 0.01  # clipping made 99.6% of pixels white


def test_float_images_are_scaled() -> None:
    values = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    buf = io.BytesIO()
    PILImage.fromarray(values, mode="F").save(buf, format="TIFF")
    gray = np.asarray(load_image(buf.getvalue()))[..., 0].astype(int)
    assert gray.min() == 0 and gray.max() == 255 and 100 < gray.mean() < 155


def _clip(path, frames: int, size: tuple[int, int] = (64, 48)):  # noqa: ANN001, ANN202
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), i % 256, dtype=np.uint8))
    writer.release()
    return path


def test_a_long_video_keeps_only_the_sampled_frames(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from qwenvl.media import load_video

    path = _clip(tmp_path / "long.avi", 1500)
    made: list[int] = []
    real = PILImage.fromarray

    def counting(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(PILImage, "fromarray", counting)
    frames, fps = load_video(path, nframes=8)
    assert len(frames) == 8 and len(made) == 8  # 8 frames converted, not 1500 held in memory
    assert fps == pytest.approx(8 / 1500 * 30)
    assert abs(int(np.asarray(frames[-1])[0, 0, 0]) - 1499 % 256) <= 4  # the last sampled frame is near the end (JPEG)


def test_video_frames_over_the_pixel_limit_are_refused_before_decoding(tmp_path) -> None:  # noqa: ANN001
    from qwenvl.media import load_video

    path = _clip(tmp_path / "clip.avi", 10)
    with pytest.raises(ImageSizeError, match="max_image_pixels"):
        load_video(path, policy=MediaPolicy(max_image_pixels=1000))
