"""A scripted HTTP server on 127.0.0.1 for fault tests: each request is answered by a handler function."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Handler = Callable[["Exchange"], None]


class Exchange:
    """One request as the handler sees it, with helpers to answer (or misbehave)."""

    def __init__(self, http: BaseHTTPRequestHandler, body: bytes) -> None:
        self.http = http
        self.method = http.command
        self.path = http.path
        self.raw = body
        try:
            self.json: Any = json.loads(body) if body else None
        except ValueError:
            self.json = None

    @property
    def text(self) -> str:
        """All message text of a chat request (to pick a behaviour by a marker in the prompt)."""
        if not isinstance(self.json, dict):
            return ""
        parts = []
        for m in self.json.get("messages", []):
            content = m.get("content")
            if isinstance(content, str):
                parts.append(content)
            else:
                parts.extend(p.get("text", "") for p in content or [] if isinstance(p, dict))
        return "\n".join(parts)

    def send(self, status: int, body: bytes | str | Any, headers: dict[str, str] | None = None) -> None:
        data = (
            body if isinstance(body, bytes) else body.encode() if isinstance(body, str) else json.dumps(body).encode()
        )
        self.http.send_response(status)
        content_type = "application/json" if not isinstance(body, bytes | str) else "text/plain"
        self.http.send_header("Content-Type", (headers or {}).pop("Content-Type", content_type))
        for key, value in (headers or {}).items():
            self.http.send_header(key, value)
        self.http.send_header("Content-Length", str(len(data)))
        self.http.end_headers()
        self.http.wfile.write(data)

    def start_stream(self, content_type: str = "text/event-stream") -> None:
        self.http.send_response(200)
        self.http.send_header("Content-Type", content_type)
        self.http.end_headers()

    def write(self, data: bytes | str) -> bool:
        """Write raw bytes; False when the client has gone."""
        try:
            self.http.wfile.write(data if isinstance(data, bytes) else data.encode())
            self.http.wfile.flush()
            return True
        except OSError:
            return False

    def trickle(self, data: bytes, delay: float, limit_s: float = 30.0) -> None:
        """Send ``data`` one byte every ``delay`` seconds (stops when the client leaves or after limit_s)."""
        end = time.monotonic() + limit_s
        for byte in data:
            if time.monotonic() > end or not self.write(bytes([byte])):
                return
            time.sleep(delay)


def completion(text: str = "ok", finish: str = "stop", prompt_tokens: int = 10) -> dict[str, Any]:
    """A minimal OpenAI chat completion body."""
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1},
    }


def sse(data: Any) -> str:
    return f"data: {json.dumps(data) if not isinstance(data, str) else data}\n\n"


def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


class FakeServer:
    """``FakeServer(handler)`` serves on 127.0.0.1 until closed; ``hits`` counts requests per path."""

    def __init__(self, handler: Handler, model: str = "tiny", max_model_len: int = 4096) -> None:
        self.handler = handler
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()
        outer = self

        class _H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with outer.lock:
                    outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                ex = Exchange(self, body)
                if self.path.endswith("/models") and outer.serve_models:
                    ex.send(200, {"data": [{"id": model, "max_model_len": max_model_len}]})
                    return
                try:
                    outer.handler(ex)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = _handle  # noqa: N815
            do_POST = _handle  # noqa: N815

        self.serve_models = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _H)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
