"""Operational endpoints: liveness and readiness."""

from __future__ import annotations

from handlers.base import BaseHandler
from handlers.schemas import HealthSchema
from wallet import health


class HealthHandler(BaseHandler):
    async def get(self) -> None:
        self.respond({"status": "ok"}, 200, HealthSchema())


class ReadyHandler(BaseHandler):
    async def get(self) -> None:
        await health.check_ready(self.rt)
        self.respond({"status": "ok"}, 200, HealthSchema())


routes = [(r"/health", HealthHandler), (r"/ready", ReadyHandler)]
