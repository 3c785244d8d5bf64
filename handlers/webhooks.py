"""Webhook endpoints: register, list, read, delete, rotate the secret; list and redeliver deliveries."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from handlers.base import BaseHandler, api, authenticated, parse_uuid, recently_authenticated
from handlers.field_types import (
    Text,
    UtcDateTime,
)
from handlers.schemas import (
    Output,
    PageQuery,
)
from wallet.notify import webhooks
from wallet.notify.events import TYPES as EVENT_TYPES

TAG = "Webhooks"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class WebhookEndpointCreateSchema(Schema):
    url = Text(required=True, validate=validate.Length(min=1, max=2048))
    events = fields.List(
        Text(validate=validate.OneOf([*EVENT_TYPES, "*"])),
        required=True,
        validate=validate.Length(min=1, max=len(EVENT_TYPES)),
        metadata={"description": 'Event types to send, or ["*"] for all.'},
    )
    description = Text(load_default=None, validate=validate.Length(max=255))


class RotateSecretSchema(Schema):
    grace_seconds = fields.Integer(
        load_default=0,
        validate=validate.Range(min=0, max=86400),
        metadata={"description": "How long the old secret keeps signing too (both signatures are sent)."},
    )


# ---- responses --------------------------------------------------------------------------------------------------


class WebhookEndpointSchema(Output):
    id = fields.UUID()
    url = fields.String()
    events = fields.List(fields.String())
    description = fields.String(allow_none=True)
    status = fields.String(validate=validate.OneOf(["active", "failing"]))
    paused_until = UtcDateTime(
        allow_none=True,
        metadata={
            "description": "Set while the endpoint's attempts keep failing (its circuit breaker is open): nothing is "
            "sent to it until then, and then one delivery alone, whose success resumes the rest."
        },
    )
    created_at = UtcDateTime()


class WebhookEndpointSecretSchema(WebhookEndpointSchema):
    secret = fields.String(metadata={"description": "whsec_ and the base64 signing key; shown only here."})


class WebhookEndpointListSchema(Output):
    items = fields.List(fields.Nested(WebhookEndpointSchema))
    next_cursor = fields.String(allow_none=True)


class WebhookDeliverySchema(Output):
    id = fields.UUID()
    event_id = fields.Integer()
    event_type = fields.String()
    status = fields.String(validate=validate.OneOf(["pending", "succeeded", "failed"]))
    attempts = fields.Integer()
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    next_attempt_at = UtcDateTime(allow_none=True)
    created_at = UtcDateTime()
    delivered_at = UtcDateTime(allow_none=True)


class WebhookDeliveryListSchema(Output):
    items = fields.List(fields.Nested(WebhookDeliverySchema))
    next_cursor = fields.String(allow_none=True)


class WebhookEndpointListHandler(BaseHandler):
    @api("listWebhookEndpoints", {200: WebhookEndpointListSchema})
    @authenticated
    async def get(self) -> None:
        """The caller's webhook endpoints."""
        self.respond(await webhooks.list_endpoints(self.rt, self.principal.user_id), 200)

    @api("createWebhookEndpoint", {201: WebhookEndpointSecretSchema}, body=WebhookEndpointCreateSchema, errors=(409,))
    @recently_authenticated
    async def post(self) -> None:
        """Register a URL for events (Standard Webhooks); the signing secret is in this answer only. Needs a recent
        authentication (step-up)."""
        data = self.load()
        endpoint = await webhooks.create_endpoint(
            self.rt, self.principal.user_id, data["url"], data["events"], data["description"]
        )
        self.respond(endpoint, 201)


class WebhookEndpointHandler(BaseHandler):
    @api("getWebhookEndpoint", {200: WebhookEndpointSchema})
    @authenticated
    async def get(self, endpoint_id: str) -> None:
        """One of the caller's webhook endpoints."""
        self.respond(await webhooks.get_endpoint(self.rt, self.principal.user_id, parse_uuid(endpoint_id, "id")), 200)

    @api("deleteWebhookEndpoint", {204: None})
    @authenticated
    async def delete(self, endpoint_id: str) -> None:
        """Remove an endpoint; nothing more is sent to it."""
        await webhooks.delete_endpoint(self.rt, self.principal.user_id, parse_uuid(endpoint_id, "id"))
        self.respond(None, 204)


class WebhookSecretHandler(BaseHandler):
    @api("rotateWebhookSecret", {200: WebhookEndpointSecretSchema}, body=RotateSecretSchema)
    @recently_authenticated
    async def post(self, endpoint_id: str) -> None:
        """A new signing secret; the old one also signs for `grace_seconds`. Needs a recent authentication."""
        grace = self.load()["grace_seconds"]
        endpoint = await webhooks.rotate_secret(self.rt, self.principal.user_id, parse_uuid(endpoint_id, "id"), grace)
        self.respond(endpoint, 200)


class WebhookDeliveryListHandler(BaseHandler):
    @api("listWebhookDeliveries", {200: WebhookDeliveryListSchema}, query=PageQuery)
    @authenticated
    async def get(self, endpoint_id: str) -> None:
        """An endpoint's deliveries, newest first, with their attempts and last status code."""
        endpoint = parse_uuid(endpoint_id, "id")
        self.respond(await webhooks.list_deliveries(self.rt, self.principal.user_id, endpoint, **self.query()), 200)


class WebhookRetryHandler(BaseHandler):
    @api("retryWebhookDelivery", {202: WebhookDeliverySchema})
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
