"""Loading images and videos from every kind of source, the media policy, and typed errors."""

from __future__ import annotations

import base64
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image as PILImage

from qwenvl.errors import (
    ImageSizeError,
    MediaDecodeError,
    MediaFetchError,
    MediaNotFoundError,
    MediaPolicyError,
    UnsupportedMediaError,
)
from qwenvl.media import MediaPolicy, load_image, load_video
from tests.helpers import make_image, png_bytes


@pytest.fixture()
def png_file(tmp_path: Path) -> Path:
    path = tmp_path / "page.png"
    make_image(64, 48, seed=3).save(path)
    return path


def test_every_source_kind_loads_the_same_pixels(png_file: Path) -> None:
    data = png_file.read_bytes()
    expected = PILImage.open(png_file).convert("RGB").tobytes()
    sources = [
        png_file,
        str(png_file),
        png_file.as_uri(),
        "data:image/png;base64," + base64.b64encode(data).decode(),
        data,
        PILImage.open(png_file),
    ]
    for source in sources:
        img = load_image(source)
        assert img.mode == "RGB" and img.size == (64, 48)
        assert img.tobytes() == expected


def test_rgba_is_composited_on_white() -> None:
    rgba = PILImage.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    img = load_image(png_bytes(rgba))
    assert img.getpixel((5, 5)) == (255, 255, 255)
    assert img.getpixel((0, 0)) == (0, 0, 255)


def test_missing_file_names_the_input(tmp_path: Path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(MediaNotFoundError, match="nope.png"):
        load_image(str(missing))


def test_undecodable_and_unsupported() -> None:
    truncated = png_bytes(make_image(50, 50))[:80]
    with pytest.raises(MediaDecodeError):
        load_image(truncated)
    with pytest.raises(UnsupportedMediaError, match="not in a known image format"):
        load_image(b"%PDF-1.7 this is not an image")
    with pytest.raises(MediaDecodeError, match="empty"):
        load_image(b"")
    with pytest.raises(UnsupportedMediaError, match="scheme"):
        load_image("ftp://example.com/a.png")
    with pytest.raises(MediaDecodeError, match="base64"):
        load_image("data:image/png;base64,@@@")


def test_zero_size_and_aspect_ratio() -> None:
    with pytest.raises(ImageSizeError, match="zero size"):
        load_image(PILImage.new("RGB", (0, 10)))
    with pytest.raises(ImageSizeError, match="aspect ratio"):
        load_image(PILImage.new("RGB", (2010, 10)))
    assert load_image(PILImage.new("RGB", (1990, 10))).size == (1990, 10)


def test_local_policy(png_file: Path, tmp_path: Path) -> None:
    with pytest.raises(MediaPolicyError, match="disabled"):
        load_image(png_file, MediaPolicy.untrusted())
    inside = MediaPolicy(local_root=png_file.parent)
    assert load_image(png_file, inside).size == (64, 48)
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(MediaPolicyError, match="outside"):
        load_image(png_file, MediaPolicy(local_root=other))
    with pytest.raises(MediaPolicyError, match="max_bytes"):
        load_image(png_file, MediaPolicy(max_bytes=10))
    # bytes and data URIs still work under the untrusted policy
    assert load_image(png_file.read_bytes(), MediaPolicy.untrusted()).size == (64, 48)


@pytest.fixture()
def http_server(png_file: Path) -> Iterator[str]:
    data = png_file.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/img.png":
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            elif self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/img.png")
                self.end_headers()
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_fetch_and_ssrf_guard(http_server: str) -> None:
    trusted = MediaPolicy.trusted()
    assert load_image(f"{http_server}/img.png", trusted).size == (64, 48)
    assert load_image(f"{http_server}/redirect", trusted).size == (64, 48)
    with pytest.raises(MediaFetchError, match="404"):
        load_image(f"{http_server}/missing.png", trusted)
    # default policy: loopback is refused before any request is sent
    with pytest.raises(MediaPolicyError, match="non-public"):
        load_image(f"{http_server}/img.png")
    with pytest.raises(MediaPolicyError, match="disabled"):
        load_image(f"{http_server}/img.png", MediaPolicy(allow_remote=False))
    with pytest.raises(MediaPolicyError, match="allowed_domains"):
        load_image(f"{http_server}/img.png", MediaPolicy.untrusted(["images.example.com"]))
    with pytest.raises(MediaPolicyError, match="max_bytes"):
        load_image(f"{http_server}/img.png", MediaPolicy(allow_private_hosts=True, max_bytes=20))


def test_video_from_frames_samples_an_even_count() -> None:
    frames = [make_image(56, 56, seed=i) for i in range(10)]
    sampled, fps = load_video(frames, nframes=4)
    assert len(sampled) == 4
    assert sampled[0].tobytes() == frames[0].tobytes() and sampled[-1].tobytes() == frames[-1].tobytes()
    sampled, _ = load_video(frames, fps=1.0, sample_fps=2.0)  # 5 s of video at 1 frame/s -> 4 (min, even)
    assert len(sampled) == 4
    with pytest.raises(MediaDecodeError, match="at least 2"):
        load_video(frames[:1])


def test_video_file_is_decoded(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(20):
        writer.write(np.full((48, 64, 3), i * 10, dtype=np.uint8))
    writer.release()
    frames, fps = load_video(path, fps=2.0)
    assert len(frames) == 4  # 2 s at 10 fps sampled at 2 fps
    assert frames[0].size == (64, 48)
    assert fps == pytest.approx(2.0)
    with pytest.raises(MediaNotFoundError):
        load_video(tmp_path / "missing.mp4")
    with pytest.raises(MediaDecodeError):
        bad = tmp_path / "bad.mp4"
        bad.write_bytes(b"not a video")
        load_video(bad)
