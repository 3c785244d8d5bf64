"""Operational endpoints: liveness (with the release), readiness and the Prometheus metrics."""

from __future__ import annotations

import hmac

from handlers.base import BaseHandler, api
from handlers.schemas import HealthSchema, LivenessSchema
from wallet import errors
from wallet.notify import dispatch
from wallet.platform import health, metrics, release

TAG = "Service"  # the OpenAPI tag of this module's operations


class HealthHandler(BaseHandler):
    @api("getHealth", {200: LivenessSchema})
    async def get(self) -> None:
        """Liveness: 200 while the process runs, with the release it runs (its version and git revision)."""
        self.respond({"status": "ok", "version": release.version(), "revision": release.revision()}, 200)


class ReadyHandler(BaseHandler):
    @api("getReadiness", {200: HealthSchema}, errors=(503,))
    async def get(self) -> None:
        """Readiness: 200 when the database (and Redis, when configured) answer.

        A 503 names the dependency that does not answer in `details`, e.g. `{"database": "down", "redis": "ok"}`.
        From a SIGTERM on it is 503 `{"server": "stopping"}` while the server still answers for a few seconds
        (DRAIN_DELAY), so a load balancer sends no new requests before the port closes.
        """
        if self.application.draining:
            raise errors.ServiceUnavailable("The server is stopping.", details={"server": "stopping"})
        await health.check_ready(self.rt)
        self.respond({"status": "ok"}, 200)


class MetricsHandler(BaseHandler):
    @api("getMetrics", {200: {"type": "string"}}, media="text/plain", errors=(401, 404))
    async def get(self) -> None:
        """Prometheus metrics of the whole server (every worker process), for a scraper.

        Send `Authorization: Bearer <METRICS_TOKEN>`. Without METRICS_TOKEN set on the server it does not exist (404);
        a missing or wrong token is 401. Not a user's access token: a scraper needs no account.
        """
        token = self.rt.settings.metrics_token
        if not token:
            raise errors.NotFound("No such endpoint.")
        scheme, _, sent = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), token.encode()):
            raise errors.InvalidToken("Send 'Authorization: Bearer <METRICS_TOKEN>'.")
        try:
            outbox = await dispatch.backlog(self.rt)
        except errors.ServiceUnavailable:
            outbox = {}  # the process's own numbers still answer while the database is away
        body, content_type = metrics.render(outbox)
        self.set_header("Content-Type", content_type)
        self.finish(body)


routes = [(r"/health", HealthHandler), (r"/ready", ReadyHandler), (r"/metrics", MetricsHandler)]
