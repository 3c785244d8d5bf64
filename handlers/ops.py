"""Operational endpoints: liveness (with the release), readiness, the Prometheus metrics, and what this server has
turned on (for clients such as the web wallet, which hides what is off)."""

from __future__ import annotations

import hmac

from marshmallow import fields

from handlers.base import BaseHandler, api
from handlers.schemas import HealthSchema, LivenessSchema, Output
from wallet import errors
from wallet.identity import google
from wallet.money import currencies
from wallet.notify import dispatch
from wallet.platform import health, metrics, release
from wallet.providers import paystack

TAG = "Service"  # the OpenAPI tag of this module's operations


class HealthHandler(BaseHandler):
    @api("getHealth", {200: LivenessSchema})
    async def get(self) -> None:
        """Liveness: 200 while the process runs, with the release it runs (its version and git revision)."""
        self.respond({"status": "ok", "version": release.version(), "revision": release.revision()}, 200)


class ConfigSchema(Output):
    version = fields.String(metadata={"description": "The release this server runs."})
    paystack = fields.Boolean(metadata={"description": "Paystack deposits are set up."})
    google = fields.Boolean(metadata={"description": "Google sign-in and linking are set up."})
    payouts = fields.Boolean(metadata={"description": "Payouts to bank accounts (through Paystack) are set up."})
    two_factor = fields.Boolean(metadata={"description": "Users may turn on a second factor (TOTP)."})
    currencies = fields.List(fields.String(), metadata={"description": "The currencies a wallet may hold."})
    self_deposit = fields.Boolean(metadata={"description": "Users may deposit into their own wallets."})


class ConfigHandler(BaseHandler):
    @api("getConfig", {200: ConfigSchema})
    async def get(self) -> None:
        """What this server has turned on, so a client offers only what works (no secret is told)."""
        s = self.rt.settings
        self.respond(
            {
                "version": release.version(),
                "paystack": paystack.configured(s),
                "google": google.configured(s),
                "payouts": paystack.configured(s),
                "two_factor": True,
                "currencies": list(currencies()),
                "self_deposit": s.allow_self_deposit,
            },
            200,
        )


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
        try:
            replica_lag = await self.rt.replica_lag()
        except errors.ServiceUnavailable:
            replica_lag = None
        body, content_type = metrics.render(outbox, replica_lag)
        self.set_header("Content-Type", content_type)
        self.finish(body)


routes = [
    (r"/health", HealthHandler),
    (r"/ready", ReadyHandler),
    (r"/metrics", MetricsHandler),
    (r"/api/v1/config", ConfigHandler),
]
