"""An HTTP server on 127.0.0.1 that serves one folder the way object stores and CDNs do:
byte ranges (206, 416), HEAD with Content-Length, ETag and Last-Modified, keep-alive, and no
directory listings. Python's http.server answers every GET with the whole file, which hides
exactly the bugs a ranged reader has, so this handler is our own.

It can also answer the next requests with an error status (``fail_next``), the way a
throttled or failing store does (503, 429, 500), and it records every request it saw.
"""

from __future__ import annotations

import email.utils
import os
import re
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Seen(NamedTuple):
    """One request the server answered: method, path, Range header (or None), status."""

    method: str
    path: str
    range: str | None
    status: int


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """The inclusive (first, last) byte of a single ``bytes=`` range over ``size`` bytes;
    None to answer the whole file (no header, several ranges, or a malformed one, which
    RFC 9110 lets a server ignore); "unsatisfiable" for a range past the end (416)."""
    if header is None:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        """Quiet: the test reads ``HttpServer.seen`` instead."""

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(body=True)

    def _send_status(self, status: int, headers: dict[str, str], payload: bytes, body: bool) -> None:
        self.server.owner._record(Seen(self.command, self.path, self.headers.get("Range"), status))
        self.send_response(status)
        headers = {"Content-Length": str(len(payload)), **headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body and payload:
            self.wfile.write(payload)

    def _answer(self, body: bool) -> None:
        failure = self.server.owner._take_failure()
        if failure is not None:
            message = f"injected {failure}\n".encode()
            self._send_status(failure, {"Retry-After": "0", "Content-Type": "text/plain"}, message, body)
            return
        path = self.server.owner._resolve(self.path)
        if path is None:
            self._send_status(HTTPStatus.NOT_FOUND, {"Content-Type": "text/plain"}, b"not found\n", body)
            return
        stat = path.stat()
        size = stat.st_size
        common = {
            "Accept-Ranges": "bytes",
            "ETag": f'"{stat.st_mtime_ns:x}-{size:x}"',
            "Last-Modified": email.utils.formatdate(stat.st_mtime, usegmt=True),
            "Content-Type": "application/octet-stream",
        }
        wanted = parse_range(self.headers.get("Range"), size)
        if wanted == "unsatisfiable":
            self._send_status(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                              {**common, "Content-Range": f"bytes */{size}"}, b"", body)
            return
        with path.open("rb") as f:
            if wanted is None:
                payload = f.read() if body else b""
                self._send_status(HTTPStatus.OK, {**common, "Content-Length": str(size)}, payload, body)
                return
            assert isinstance(wanted, tuple)
            first, last = wanted
            f.seek(first)
            payload = f.read(last - first + 1) if body else b""
        self._send_status(HTTPStatus.PARTIAL_CONTENT,
                          {**common, "Content-Range": f"bytes {first}-{last}/{size}",
                           "Content-Length": str(last - first + 1)}, payload, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: HttpServer

    def handle_error(self, request: object, client_address: object) -> None:
        """A client (or the fault proxy) hanging up mid-request is normal here: stay quiet
        about it; anything else is printed as usual."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        self.owner._track(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        self.owner._untrack(request)
        super().shutdown_request(request)


class HttpServer:
    """Serves ``root`` on 127.0.0.1 (a free port unless ``port`` is given) in a thread; a
    context manager. ``url(rel)`` is the address of a file under ``root``."""

    def __init__(self, root: str | os.PathLike[str], port: int = 0) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ValueError(f"HttpServer: {self.root} is not a folder")
        self._port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._failures: list[int] = []
        self.seen: list[Seen] = []

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("HttpServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, rel: str = "") -> str:
        return f"{self.endpoint}/{rel.lstrip('/')}"

    def start(self) -> HttpServer:
        if self._httpd is not None:
            return self
        self._httpd = _Server(("127.0.0.1", self._port), _Handler)
        self._httpd.owner = self
        self._port = self.port  # a restart keeps the same port
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="test-http-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection; idempotent."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:  # wake handler threads blocked on a keep-alive read
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(10)
            if self._thread.is_alive():
                raise RuntimeError("HttpServer's serving thread did not stop within 10 s")
        self._httpd = None
        self._thread = None

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status`` (a throttled or failing store)."""
        with self._lock:
            self._failures.extend([status] * count)

    # used by the handler ---------------------------------------------------------------
    def _take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.add(sock)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)

    def _resolve(self, raw_path: str) -> Path | None:
        """The file a request path names under ``root``, or None (missing, a folder, or
        outside ``root``): no listings, no escapes."""
        rel = unquote(urlsplit(raw_path).path).lstrip("/")
        path = (self.root / rel).resolve()
        if path != self.root and self.root not in path.parents:
            return None
        return path if path.is_file() else None
