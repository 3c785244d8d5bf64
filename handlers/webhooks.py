"""Webhook endpoints: register, list, read, delete, rotate the secret; list and redeliver deliveries."""

from __future__ import annotations

from handlers.base import BaseHandler, api, authenticated, parse_uuid
from handlers.schemas import (
    PageQuery,
    RotateSecretSchema,
    WebhookDeliveryListSchema,
    WebhookDeliverySchema,
    WebhookEndpointCreateSchema,
    WebhookEndpointListSchema,
    WebhookEndpointSchema,
    WebhookEndpointSecretSchema,
)
from wallet.notify import webhooks


class WebhookEndpointListHandler(BaseHandler):
    @api({200: WebhookEndpointListSchema})
    @authenticated
    async def get(self) -> None:
        """The caller's webhook endpoints."""
        self.respond(await webhooks.list_endpoints(self.rt, self.principal.user_id), 200)

    @api({201: WebhookEndpointSecretSchema}, body=WebhookEndpointCreateSchema, errors=(409,))
    @authenticated
    async def post(self) -> None:
        """Register a URL for events (Standard Webhooks); the signing secret is in this answer only."""
        data = self.load()
        endpoint = await webhooks.create_endpoint(
            self.rt, self.principal.user_id, data["url"], data["events"], data["description"]
        )
        self.respond(endpoint, 201)


class WebhookEndpointHandler(BaseHandler):
    @api({200: WebhookEndpointSchema})
    @authenticated
    async def get(self, endpoint_id: str) -> None:
        """One of the caller's webhook endpoints."""
        self.respond(await webhooks.get_endpoint(self.rt, self.principal.user_id, parse_uuid(endpoint_id, "id")), 200)

    @api({204: None})
    @authenticated
    async def delete(self, endpoint_id: str) -> None:
        """Remove an endpoint; nothing more is sent to it."""
        await webhooks.delete_endpoint(self.rt, self.principal.user_id, parse_uuid(endpoint_id, "id"))
        self.respond(None, 204)


class WebhookSecretHandler(BaseHandler):
    @api({200: WebhookEndpointSecretSchema}, body=RotateSecretSchema)
    @authenticated
    async def post(self, endpoint_id: str) -> None:
        """A new signing secret; the old one also signs for `grace_seconds`."""
        grace = self.load()["grace_seconds"]
        endpoint = await webhooks.rotate_secret(self.rt, self.principal.user_id, parse_uuid(endpoint_id, "id"), grace)
        self.respond(endpoint, 200)


class WebhookDeliveryListHandler(BaseHandler):
    @api({200: WebhookDeliveryListSchema}, query=PageQuery)
    @authenticated
    async def get(self, endpoint_id: str) -> None:
        """An endpoint's deliveries, newest first, with their attempts and last status code."""
        endpoint = parse_uuid(endpoint_id, "id")
        self.respond(await webhooks.list_deliveries(self.rt, self.principal.user_id, endpoint, **self.query()), 200)


class WebhookRetryHandler(BaseHandler):
    @api({202: WebhookDeliverySchema})
    @authenticated
    async def post(self, endpoint_id: str, delivery_id: str) -> None:
        """Send a delivery again soon, whatever its state."""
        delivery = await webhooks.retry_delivery(
            self.rt, self.principal.user_id, parse_uuid(endpoint_id, "id"), parse_uuid(delivery_id, "delivery_id")
        )
        self.respond(delivery, 202)


routes = [
    (r"/api/v1/webhook-endpoints", WebhookEndpointListHandler),
    (r"/api/v1/webhook-endpoints/([^/]+)", WebhookEndpointHandler),
    (r"/api/v1/webhook-endpoints/([^/]+)/rotate-secret", WebhookSecretHandler),
    (r"/api/v1/webhook-endpoints/([^/]+)/deliveries", WebhookDeliveryListHandler),
    (r"/api/v1/webhook-endpoints/([^/]+)/deliveries/([^/]+)/retry", WebhookRetryHandler),
]
