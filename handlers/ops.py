"""Operational endpoints: liveness and readiness."""

from __future__ import annotations

from handlers.base import BaseHandler, api
from handlers.schemas import HealthSchema
from wallet import health


class HealthHandler(BaseHandler):
    @api({200: HealthSchema})
    async def get(self) -> None:
        """Liveness: 200 while the process runs."""
        self.respond({"status": "ok"}, 200)


class ReadyHandler(BaseHandler):
    @api({200: HealthSchema}, errors=(503,))
    async def get(self) -> None:
        """Readiness: 200 when the database (and Redis, when configured) answer."""
        await health.check_ready(self.rt)
        self.respond({"status": "ok"}, 200)


routes = [(r"/health", HealthHandler), (r"/ready", ReadyHandler)]
