"""A TCP proxy on 127.0.0.1 that a test puts between a client and a real server (moto's S3
server, the HTTP server) and tells when to misbehave: reset connections (RST), delay
requests, refuse connections (stop listening), black-hole them (accept, never answer), or
answer with an HTTP error status (503 SlowDown) the way a throttled store does.

Faults act on requests, not on bytes: a request starts when the client sends data on a
connection that has nothing outstanding, so a keep-alive connection of a client's pool is
hit on its next request just like a new one. Each connection has one thread; ``close()``
resets every connection still open and joins every thread.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

_CHUNK = 65536


def rst_close(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP RST (SO_LINGER 0) instead of an orderly FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass
class ProxyCounts:
    """What the proxy did so far (read under the proxy's lock via ``FaultProxy.counts``)."""

    connections: int = 0  # accepted from clients
    requests: int = 0  # requests seen (see the module docstring)
    resets: int = 0  # connections closed with RST by a fault
    blackholed: int = 0  # requests swallowed
    http_errors: int = 0  # requests answered with an injected HTTP status
    delayed: int = 0  # requests held back by delay()
    upstream_failures: int = 0  # connections whose server could not be reached


@dataclass
class _Conn:
    client: socket.socket
    upstream: socket.socket | None
    thread: threading.Thread | None = None
    outstanding: bool = False  # a request was forwarded and no answer byte came back yet
    reset_after: int | None = None  # RST once this many more answer bytes were forwarded
    blackholed: bool = False
    killed: bool = False
    sockets: list[socket.socket] = field(default_factory=list)


class FaultProxy:
    """Forwards 127.0.0.1:``port`` (a free one by default) to ``target_host:target_port``;
    a context manager. ``endpoint`` is "http://127.0.0.1:PORT"."""

    def __init__(self, target_host: str, target_port: int, port: int = 0) -> None:
        self.target = (target_host, int(target_port))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._port = port
        self._accept_thread: threading.Thread | None = None
        self._conns: list[_Conn] = []
        self._counts = ProxyCounts()
        # fault settings, all under _lock
        self._reset_n = 0
        self._reset_until = 0.0
        self._reset_after_bytes = 0
        self._delay_s = 0.0
        self._delay_until = float("inf")
        self._refuse_until = 0.0
        self._blackhole_until = 0.0
        self._errors: list[int] = []

    # lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> FaultProxy:
        if self._accept_thread is not None:
            return self
        self._listen()
        self._accept_thread = threading.Thread(target=self._accept_loop, name="test-proxy-accept",
                                               daemon=True)
        self._accept_thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, reset every open connection and join every thread; idempotent."""
        self._stop.set()
        if self._accept_thread is not None:
            self._accept_thread.join(10)
            if self._accept_thread.is_alive():
                raise RuntimeError("FaultProxy's accept thread did not stop within 10 s")
            self._accept_thread = None
        self._close_listener()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            conn.killed = True
        for conn in conns:
            if conn.thread is not None:
                conn.thread.join(10)
                if conn.thread.is_alive():
                    raise RuntimeError("a FaultProxy connection thread did not stop within 10 s")

    stop = close

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # faults ------------------------------------------------------------------------------
    def reset_connections(self, n: int | None = None, for_s: float | None = None,
                          after_bytes: int = 0) -> None:
        """Reset (RST) the next ``n`` requests' connections, or every request's for ``for_s``
        seconds; with ``after_bytes`` > 0, only after that many bytes of the answer went
        through (a body cut short). Requests on connections already open count too."""
        if (n is None) == (for_s is None):
            raise ValueError("reset_connections: give exactly one of n= or for_s=")
        with self._lock:
            self._reset_after_bytes = after_bytes
            if n is not None:
                self._reset_n += n
            else:
                self._reset_until = time.monotonic() + float(for_s)  # type: ignore[arg-type]

    def delay(self, seconds: float, for_s: float | None = None) -> None:
        """Hold every request ``seconds`` before forwarding it (for ``for_s`` seconds, or
        until ``delay(0)``)."""
        with self._lock:
            self._delay_s = float(seconds)
            self._delay_until = float("inf") if for_s is None else time.monotonic() + for_s

    def refuse(self, for_s: float) -> None:
        """Stop listening for ``for_s`` seconds (connects are refused: ECONNREFUSED) and
        reset the connections open now, as a server that went away does."""
        with self._lock:
            self._refuse_until = time.monotonic() + for_s
            conns = [c for c in self._conns if c.thread is not None and c.thread.is_alive()]
            self._counts.resets += len(conns)
        for conn in conns:
            conn.killed = True
        # the accept thread owns the listener: wait until it has closed it
        deadline = time.monotonic() + 10
        while self._listener is not None and self._accept_thread is not None:
            if time.monotonic() > deadline:
                raise RuntimeError("FaultProxy: the listener did not close within 10 s")
            time.sleep(0.005)

    def blackhole(self, for_s: float) -> None:
        """For ``for_s`` seconds, swallow every request (accepted, never answered); those
        connections are reset when the window ends unless the client gave up first."""
        with self._lock:
            self._blackhole_until = time.monotonic() + for_s

    def http_error(self, n: int, status: int = 503) -> None:
        """Answer the next ``n`` requests with ``status`` (503 is S3's SlowDown) and close
        their connections, without forwarding them."""
        with self._lock:
            self._errors.extend([status] * n)

    def heal(self) -> None:
        """Cancel every fault now (the listener comes back at once)."""
        with self._lock:
            self._reset_n = 0
            self._reset_until = 0.0
            self._delay_s = 0.0
            self._refuse_until = 0.0
            self._blackhole_until = 0.0
            self._errors.clear()

    @property
    def counts(self) -> ProxyCounts:
        """A copy of the counters."""
        with self._lock:
            return ProxyCounts(**vars(self._counts))

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for c in self._conns if c.thread is not None and c.thread.is_alive())

    # internals ---------------------------------------------------------------------------
    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self._port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)
        sock.settimeout(0.05)
        self._port = int(sock.getsockname()[1])
        self._listener = sock

    def _close_listener(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                refusing = time.monotonic() < self._refuse_until
                listener = self._listener
            if listener is None:
                if refusing:
                    self._stop.wait(0.02)
                    continue
                try:
                    self._listen()
                except OSError:  # the port is briefly taken: try again
                    self._stop.wait(0.05)
                continue
            if refusing:  # refuse() raced with this loop: close what it opened
                self._close_listener()
                continue
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                continue
            with self._lock:
                refusing = time.monotonic() < self._refuse_until
            if refusing:  # accepted just as refuse() began
                rst_close(client)
                continue
            self._serve(client)
        self._close_listener()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(None)
        with self._lock:
            self._counts.connections += 1
            blackhole = time.monotonic() < self._blackhole_until
        upstream = None
        if not blackhole:
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                with self._lock:
                    self._counts.upstream_failures += 1
                rst_close(client)
                return
        conn = _Conn(client=client, upstream=upstream, blackholed=blackhole)
        conn.thread = threading.Thread(target=self._pump, args=(conn,), name="test-proxy-conn", daemon=True)
        with self._lock:
            self._conns = [c for c in self._conns if c.thread is not None and c.thread.is_alive()]
            self._conns.append(conn)
        conn.thread.start()

    def _on_request(self, conn: _Conn) -> str:
        """Decide what happens to a request starting on ``conn``: "forward", "reset",
        "blackhole" or an HTTP status as a string."""
        with self._lock:
            self._counts.requests += 1
            now = time.monotonic()
            if self._errors:
                self._counts.http_errors += 1
                return str(self._errors.pop(0))
            if now < self._blackhole_until:
                self._counts.blackholed += 1
                return "blackhole"
            if self._reset_n > 0 or now < self._reset_until:
                if self._reset_n > 0:
                    self._reset_n -= 1
                if self._reset_after_bytes > 0:
                    conn.reset_after = self._reset_after_bytes
                    return "forward"
                self._counts.resets += 1
                return "reset"
            delay = self._delay_s if now < self._delay_until else 0.0
            if delay > 0:
                self._counts.delayed += 1
        if delay > 0:
            self._stop.wait(delay)
        return "forward"

    def _pump(self, conn: _Conn) -> None:
        sel = selectors.DefaultSelector()
        sel.register(conn.client, selectors.EVENT_READ)
        if conn.upstream is not None:
            sel.register(conn.upstream, selectors.EVENT_READ)
        rst = False
        try:
            while not self._stop.is_set() and not conn.killed:
                if conn.blackholed:
                    with self._lock:
                        over = time.monotonic() >= self._blackhole_until
                    if over:
                        rst = True
                        break
                for key, _ in sel.select(0.05):
                    src = key.fileobj
                    try:
                        data = src.recv(_CHUNK)  # type: ignore[union-attr]
                    except OSError:
                        data = b""
                    if not data:
                        return
                    if src is conn.client:
                        if conn.blackholed:  # accepted during a black hole: swallow, count once
                            if not conn.outstanding:
                                with self._lock:
                                    self._counts.requests += 1
                                    self._counts.blackholed += 1
                                conn.outstanding = True
                            continue
                        if not conn.outstanding:
                            action = self._on_request(conn)
                            if action == "reset":
                                rst = True
                                return
                            if action == "blackhole":
                                conn.blackholed = conn.outstanding = True
                                continue
                            if action.isdigit():
                                self._answer_error(conn.client, int(action))
                                return
                        conn.outstanding = True
                        assert conn.upstream is not None
                        conn.upstream.sendall(data)
                    else:
                        conn.outstanding = False
                        if conn.reset_after is not None:
                            if len(data) >= conn.reset_after:
                                conn.client.sendall(data[:conn.reset_after])
                                with self._lock:
                                    self._counts.resets += 1
                                rst = True
                                return
                            conn.reset_after -= len(data)
                        conn.client.sendall(data)
            rst = True  # stopped, killed by refuse(), or a black hole's window ended
        except OSError:
            rst = True
        finally:
            sel.close()
            if rst:
                rst_close(conn.client)
            else:
                conn.client.close()
            if conn.upstream is not None:
                conn.upstream.close()

    @staticmethod
    def _answer_error(client: socket.socket, status: int) -> None:
        reason = {429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
                  503: "Slow Down", 504: "Gateway Timeout"}.get(status, "Error")
        code = "SlowDown" if status == 503 else "InternalError"
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>injected by the test's FaultProxy</Message></Error>").encode()
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nRetry-After: 0\r\nConnection: close\r\n\r\n").encode()
        with contextlib.suppress(OSError):
            client.sendall(head + body)
            # closing with unread request bytes would send RST and hide the status: let the
            # client read it and hang up first (bounded)
            client.shutdown(socket.SHUT_WR)
            client.settimeout(0.2)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and client.recv(_CHUNK):
                pass
