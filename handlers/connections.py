"""The HTTP server's guard against running out of file descriptors: a connection cap below the limit, a fast 503
beyond it, and an accept loop that pauses (and says so once in a while) instead of spinning on EMFILE; and its part
of a graceful stop: the listener closes without dropping what the kernel had queued, and a connection waiting for
its next request is closed only when the client has sent nothing on it."""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import socket
import time
import typing
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from tornado import httputil
from tornado.http1connection import HTTP1ServerConnection
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

log = logging.getLogger("wallet.server")

# Descriptors kept back from the connection cap for everything else a process holds open: the database pool (added
# separately), Redis's pool (wallet/platform/store.py), the log, the event loop, the listening sockets, libraries.
RESERVED_FDS = 128
# Out of descriptors anyway: how long the accept loop rests before it tries again.
ACCEPT_PAUSE = 0.1
# An overload is logged once per this many seconds, however many connections it turns away.
OVERLOAD_LOG_INTERVAL = 10.0

_REFUSAL_BODY = orjson.dumps(
    {"error": "The server has too many connections open; try again shortly.", "code": "SERVICE_UNAVAILABLE"}
)
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=UTF-8\r\nRetry-After: 1\r\n"
    b"Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)
# Stopping: how long a connection accepted last may wait for its first request before it is closed as idle.
FIRST_REQUEST_WAIT = 1.0
_OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def raise_fd_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit where allowed; the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the open files limit", extra={"soft": soft, "hard": hard})
    return soft


def connection_cap(wanted: int, fd_limit: int, db_pool_size: int) -> int:
    """MAX_CONNECTIONS, lowered so that the connections and everything else fit under the descriptor limit."""
    return max(1, min(wanted, fd_limit - RESERVED_FDS - db_pool_size))


class RateLimitedLog:
    """A warning logged at most once per interval, with how many times it happened meanwhile."""

    def __init__(self, message: str, interval: float) -> None:
        self._message, self._interval = message, interval
        self._last = -interval
        self._count = 0

    def note(self, **extra: Any) -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= self._interval:
            log.warning(self._message, extra={**extra, "times": self._count, "per_seconds": self._interval})
            self._last, self._count = now, 0


class _Started(httputil.HTTPMessageDelegate):
    """Passes a request on, first telling `started` that its headers have arrived."""

    def __init__(self, delegate: httputil.HTTPMessageDelegate, started: Callable[[], None]) -> None:
        self._delegate, self._started = delegate, started

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders) -> Any:
        self._started()
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self._delegate.data_received(chunk)

    def finish(self) -> None:
        self._delegate.finish()

    def on_connection_close(self) -> None:
        self._delegate.on_connection_close()


def _has_sent(sock: socket.socket) -> bool:
    """Bytes (or the end) from the client wait unread on this socket."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset: Tornado's own close path takes it
    return True


class CappedHTTPServer(HTTPServer):
    """Tornado's HTTPServer, holding at most `max_connections` connections; a connection beyond them gets a 503
    and is closed at once, so new clients get an answer rather than a timeout."""

    def initialize(self, *args: Any, max_connections: int, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        self._overloaded = RateLimitedLog("connections refused: too many open", OVERLOAD_LOG_INTERVAL)
        self._out_of_fds = RateLimitedLog("accept paused: out of file descriptors", OVERLOAD_LOG_INTERVAL)
        # Connections waiting for a request's headers, and since when; those that have had one.
        self._waiting: dict[HTTP1ServerConnection, float] = {}
        self._served: set[HTTP1ServerConnection] = set()

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        connection = typing.cast(HTTP1ServerConnection, server_conn)
        self._waiting[connection] = time.monotonic()

        def started() -> None:
            self._waiting.pop(connection, None)
            self._served.add(connection)

        return _Started(super().start_request(server_conn, request_conn), started)

    def on_close(self, server_conn: object) -> None:
        connection = typing.cast(HTTP1ServerConnection, server_conn)
        self._waiting.pop(connection, None)
        self._served.discard(connection)
        super().on_close(server_conn)

    def close_idle(self) -> None:
        """Close, with a FIN, each connection waiting for a request on which the client has sent nothing (closing a
        socket with unread bytes would reset it: those are read and answered instead). A new connection first gets
        FIRST_REQUEST_WAIT for its request, which may still be on its way."""
        now = time.monotonic()
        for connection, since in list(self._waiting.items()):
            sock = connection.stream.socket
            fresh = connection not in self._served and now - since < FIRST_REQUEST_WAIT
            if sock is not None and not fresh and not _has_sent(sock):
                connection.stream.close()

    def _admit(self, connection: socket.socket, address: Any) -> None:
        if len(self._connections) < self.max_connections:  # Tornado's own set of open connections
            self._handle_connection(connection, address)
            return
        # Refused on the spot, without a stream: a burst of refusals holds no descriptor past this call.
        self._overloaded.note(open=len(self._connections), max_connections=self.max_connections)
        with contextlib.suppress(OSError):  # the client has gone already, or its buffer is full
            connection.send(REFUSAL)
        connection.close()

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        # Tornado's accept loop lets EMFILE escape and is called again at once, since the socket stays readable:
        # a busy loop writing an error per attempt. This one rests for a moment instead.
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = self._accept(sock)

    def _accept(self, sock: socket.socket) -> Callable[[], None]:
        io_loop = IOLoop.current()
        state = {"listening": True, "stopped": False}

        def resume() -> None:
            if not state["stopped"]:
                state["listening"] = True
                io_loop.add_handler(sock, on_readable, IOLoop.READ)

        def on_readable(fd: Any, events: int, most: int = 128) -> None:
            for _ in range(most):
                try:
                    connection, address = sock.accept()
                except BlockingIOError:
                    return
                except ConnectionAbortedError:
                    continue
                except OSError as error:
                    if error.errno not in _OUT_OF_DESCRIPTORS:
                        raise
                    self._out_of_fds.note(open=len(self._connections))
                    state["listening"] = False
                    io_loop.remove_handler(sock)
                    io_loop.call_later(ACCEPT_PAUSE, resume)
                    return
                self._admit(connection, address)

        def stop() -> None:
            # TCPServer.stop() closes the socket right after this: what the kernel has queued (connected clients
            # whose requests may be on their way) is taken first, in the same step, or closing would reset them.
            state["stopped"] = True
            if state["listening"]:
                on_readable(sock.fileno(), IOLoop.READ, most=self.max_connections)
                io_loop.remove_handler(sock)

        io_loop.add_handler(sock, on_readable, IOLoop.READ)
        return stop
