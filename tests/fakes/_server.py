"""A tiny threaded HTTP server for fake ITSM systems: routing, request recording and fault injection.

Real sockets on 127.0.0.1 (a free port), so the connectors' real httpx stack, timeouts and connection
handling are exercised. Faults are queued rules matched against method and path:

* ``status``: answer with a status code (429 + Retry-After, 500, 502, 503 ...) without applying the request;
* ``hang``: wait ``seconds`` (past the client's timeout), close without answering; ``apply=True`` applies the
  request first (a slow commit whose response never arrives);
* ``drop_after_write``: apply the request, then close the connection without sending any response.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    """One request as the fake received it, and what it did with it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float
    fault: str | None = None
    status: int | None = None  # None when no response was sent (hang / drop)
    response: Any = None  # the JSON body the fake answered with

    def json(self) -> Any:
        """The request body decoded as JSON."""
        return json.loads(self.body)

    def param(self, name: str) -> str | None:
        """First value of a query parameter."""
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Reply:
    """What a route handler answers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    """One injected failure; matches requests by method and a path regex (search), `times` times."""

    kind: Literal["status", "hang", "drop_after_write"]
    status: int = 500
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    seconds: float = 30.0
    apply: bool = False
    method: str | None = None
    path: str | None = None
    times: int = 1

    def matches(self, method: str, path: str) -> bool:
        """Whether this fault applies to a request."""
        if self.times <= 0 or (self.method and self.method.upper() != method):
            return False
        return self.path is None or re.search(self.path, path) is not None


Handler = Callable[[Recorded, "re.Match[str]"], Reply]


class FakeServer:
    """Base of the fakes: subclasses register routes and implement `authorized` and `error_body`."""

    name = "fake"

    def __init__(self, *, port: int = 0) -> None:
        self.port = port  # 0: a free port
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    @property
    def url(self) -> str:
        """Base URL of the running server."""
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeServer:
        """Listen on a free loopback port and serve from a daemon thread."""
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30  # idle keep-alive connections end on their own
            disable_nagle_algorithm = True  # else headers and body writes meet delayed ACKs: +40 ms a request

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                super().finish()

            def _any(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _Handler)
        self._server.daemon_threads = True
        server = self._server
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hanging requests are released at once."""
        self._stop.set()
        with self._lock:  # wake handler threads parked on idle keep-alive connections
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configuration --

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Register a handler for a method and a full-match path regex."""
        self._routes.append((method.upper(), re.compile(pattern), handler))

    def inject(self, fault: Fault) -> Fault:
        """Queue a fault; the first matching, unspent fault is used for each request."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> Fault:
        """Answer the next `times` matching requests with `status` (the request is not applied)."""
        return self.inject(
            Fault(
                "status",
                status=status,
                headers=headers or {},
                body=body,
                method=method,
                path=path,
                times=times,
            )
        )

    def hang_next(
        self,
        seconds: float = 30.0,
        *,
        times: int = 1,
        apply: bool = False,
        method: str | None = None,
        path: str | None = None,
    ) -> Fault:
        """Hold the next matching requests `seconds` unanswered (past the client timeout), then close."""
        return self.inject(Fault("hang", seconds=seconds, apply=apply, method=method, path=path, times=times))

    def drop_after_write_next(self, *, times: int = 1, method: str | None = None, path: str | None = None) -> Fault:
        """Apply the next matching requests, then drop the connection without a response."""
        return self.inject(Fault("drop_after_write", method=method, path=path, times=times))

    def clear_faults(self) -> None:
        """Forget every queued fault."""
        with self._lock:
            self.faults.clear()

    def requests_to(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests filtered by method and a path regex (search)."""
        with self._lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method.upper()) and (path is None or re.search(path, r.path))
            ]

    # -- subclass hooks --

    def authorized(self, req: Recorded) -> Reply | None:
        """None when the request's credentials are good, else the rejection."""
        return None

    def error_body(self, status: int, message: str) -> Any:
        """The system's error envelope for an injected or routing error."""
        return {"error": message}

    # -- serving --

    def _take_fault(self, method: str, path: str) -> Fault | None:
        """Consume one matching fault."""
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    return fault
        return None

    def _dispatch(self, req: Recorded) -> Reply:
        """Auth, then the matching route; a 404/405 in the system's envelope otherwise."""
        denied = self.authorized(req)
        if denied is not None:
            return denied
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(req.path)
            if match is None:
                continue
            allowed = True
            if method == req.method:
                with self._lock:  # handlers mutate shared state: serialise them like one database
                    return handler(req, match)
        if allowed:
            return Reply(405, self.error_body(405, "Method not allowed"))
        return Reply(404, self.error_body(404, f"No route for {req.path}"))

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        """Handle one request: record it, apply a fault if one matches, else dispatch."""
        split = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        req = Recorded(
            method=h.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k: v for k, v in h.headers.items()},
            body=body,
            at=time.time(),
        )
        with self._lock:
            self.requests.append(req)
        fault = self._take_fault(req.method, req.path)
        req.fault = fault.kind if fault else None
        if fault is not None and fault.kind == "status":
            body_obj = fault.body if fault.body is not None else self.error_body(fault.status, "injected fault")
            self._send(h, req, Reply(fault.status, body_obj, dict(fault.headers)))
            return
        if fault is not None and fault.kind == "hang":
            if fault.apply:
                self._dispatch(req)
            self._stop.wait(fault.seconds)
            self._drop(h)
            return
        reply = self._dispatch(req)
        if fault is not None and fault.kind == "drop_after_write":
            self._drop(h)
            return
        self._send(h, req, reply)

    @staticmethod
    def _drop(h: BaseHTTPRequestHandler) -> None:
        """Close the connection without a response (the client sees a disconnect or a timeout)."""
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, req: Recorded, reply: Reply) -> None:
        """Write a JSON (or empty) response."""
        req.status, req.response = reply.status, reply.body
        payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        h.send_response(reply.status)
        if payload:
            h.send_header("Content-Type", "application/json;charset=UTF-8")
        for name, value in reply.headers.items():
            h.send_header(name, value)
        h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if payload:
            h.wfile.write(payload)
