"""The HTTP server's guard against running out of file descriptors: a connection cap below the limit, a fast 503
beyond it, and an accept loop that pauses (and says so once in a while) instead of spinning on EMFILE."""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
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


class CappedHTTPServer(HTTPServer):
    """Tornado's HTTPServer, holding at most `max_connections` connections; a connection beyond them gets a 503
    and is closed at once, so new clients get an answer rather than a timeout."""

    def initialize(self, *args: Any, max_connections: int, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections
        self._overloaded = RateLimitedLog("connections refused: too many open", OVERLOAD_LOG_INTERVAL)
        self._out_of_fds = RateLimitedLog("accept paused: out of file descriptors", OVERLOAD_LOG_INTERVAL)

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

        def on_readable(fd: Any, events: int) -> None:
            for _ in range(128):
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
            state["stopped"] = True
            if state["listening"]:
                io_loop.remove_handler(sock)

        io_loop.add_handler(sock, on_readable, IOLoop.READ)
        return stop
