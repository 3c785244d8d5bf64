"""Event endpoints: the caller's events in commit order, as pages and as a live WebSocket stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import marshmallow
import orjson
from marshmallow import Schema, fields, validate
from tornado import iostream, websocket

from handlers.base import BaseHandler, api, assign_request_id, render_error, requires
from handlers.field_types import (
    Text,
    UtcDateTime,
)
from handlers.schemas import Output, PageQuery
from wallet import errors
from wallet.identity import keys
from wallet.identity.auth import authenticate, watch_revocation
from wallet.notify import events
from wallet.platform.runtime import Runtime
from wallet.principal import Principal

TAG = "Events"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class EventQuery(PageQuery):
    after = fields.Integer(
        validate=validate.Range(min=0, max=2**63 - 1), metadata={"description": "Only events after this event id."}
    )


class StreamQuery(Schema):
    after = fields.Integer(
        validate=validate.Range(min=0, max=2**63 - 1),
        metadata={"description": "Replay the events after this id first."},
    )
    access_token = Text(
        metadata={"description": "Deprecated (a URL ends up in logs): send the token as the second subprotocol."}
    )


# ---- responses --------------------------------------------------------------------------------------------------


class EventSchema(Output):
    id = fields.Integer(metadata={"description": "Increases in commit order for each user."})
    type = fields.String()
    created_at = UtcDateTime()
    data = fields.Dict(metadata={"description": "The Transaction (as the receiver sees it) or the change reported."})


class EventListSchema(Output):
    items = fields.List(fields.Nested(EventSchema))
    next_cursor = fields.String(allow_none=True)


log = logging.getLogger("wallet.events")

# Close codes of the stream (4000-4999 are the application's): the client resumes with ?after=<last id it got>.
CLOSE_REVOKED = 4401  # the login was revoked or the token expired: log in (or refresh) first
CLOSE_FORBIDDEN = 4403  # the account may no longer read (deactivated, or a key's owner deactivated)
CLOSE_TOO_SLOW = 4408  # a message waited longer than SEND_TIMEOUT to be taken
CLOSE_UNAVAILABLE = 1011  # a dependency is down
CLOSE_RESTART = 1012  # the server is stopping (a deploy): reconnect at once, another server (or this one, back) answers
SEND_TIMEOUT = 10
PAGE = 100


class EventListHandler(BaseHandler):
    @api("listEvents", {200: EventListSchema}, query=EventQuery)
    @requires("read")
    async def get(self) -> None:
        """The caller's events, oldest first, after an event id (`after`) or a page's `next_cursor`."""
        self.respond(await events.list_events(self.rt, self.principal.user_id, **self.query()), 200)


class EventStreamHandler(websocket.WebSocketHandler):
    """Pushes the caller's events as they commit. Messages are only ever taken from the outbox one page at a time,
    as fast as the client reads them, so a slow client holds at most one page here; a stalled one is closed."""

    principal: Principal | None = None
    params: dict[str, Any] = {}
    after = 0

    @property
    def rt(self) -> Runtime:
        return self.application.settings["runtime"]

    @property
    def ping_interval(self) -> float:
        return self.rt.settings.events_ping_interval

    def _credentials(self) -> tuple[Callable[[Runtime, str], Awaitable[Principal]], str | None]:
        """How the caller authenticates, and with what: a service's API key (`X-API-Key`, with `read`), or an
        access token. Browsers cannot set Authorization on a WebSocket: the token comes as the second entry of
        Sec-WebSocket-Protocol ("bearer, <token>"), or, deprecated, as a query parameter (never logged: the request
        line logs the path only, and so does log_exception below)."""
        key = self.request.headers.get("X-API-Key")
        if key is not None:
            return keys.authenticate, key
        protocols = [p.strip() for p in self.request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if len(protocols) == 2 and protocols[0].lower() == "bearer":
            return authenticate, protocols[1]
        return authenticate, self.params.get("access_token")

    async def prepare(self) -> None:
        self.request_id = assign_request_id(self)
        try:
            args = {k: self.decode_argument(v[-1], name=k) for k, v in self.request.query_arguments.items()}
            try:
                self.params = StreamQuery().load(args)
            except marshmallow.ValidationError as error:
                raise errors.ValidationError(error.normalized_messages()) from None
            self.authenticate, self.token = self._credentials()
            if not self.token:
                raise errors.AuthError()
            self.principal = await self.authenticate(self.rt, self.token)
            self.principal.require("read")
            if self.request.headers.get("Upgrade", "").lower() != "websocket":
                raise errors.InvalidRequest("This endpoint is a WebSocket: send 'Upgrade: websocket'.")
            if self.application.draining:
                raise errors.ServiceUnavailable("The server is stopping; connect again.")
        except errors.WalletError as error:
            status, body = render_error(self, error)
            self.set_status(status)
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(orjson.dumps(body) + b"\n")

    # Tornado's own would log the URI, query string and all, and the request's headers.
    log_exception = BaseHandler.log_exception

    def require_principal(self) -> Principal:
        assert self.principal is not None  # prepare() answered 401 otherwise
        return self.principal

    def select_subprotocol(self, subprotocols: list[str]) -> str | None:
        return "bearer" if "bearer" in subprotocols else None

    @api("streamEvents", {101: None}, query=StreamQuery)
    @requires("read")
    async def get(self) -> None:
        """The caller's events as WebSocket messages (Event JSON), oldest first after `after`, then live.

        Authenticate with `Sec-WebSocket-Protocol: bearer, <token>` or `X-API-Key` (a key with `read`);
        `?access_token=` is deprecated. Close codes: 4401 the login was revoked (within about a second), the token
        expired or the key was revoked; 4403 the account was deactivated (a key's owner); 4408 the client read too
        slowly; 1011 a dependency is down; 1012 the server is restarting (reconnect at once). After any close,
        reconnect with `?after=<the last id received>` to miss nothing."""
        await super().get()

    def open(self) -> None:
        self.after = self.params.get("after", 0)
        self._pump_task = asyncio.create_task(self._pump())

    def on_message(self, message: str | bytes) -> None:
        pass  # the stream is one-way; what a client sends is ignored

    def on_close(self) -> None:
        self._pump_task.cancel()

    async def _send_new(self, user_id: uuid.UUID) -> None:
        while True:
            page = await events.list_events(self.rt, user_id, after=self.after, limit=PAGE)
            for item in page["items"]:
                await asyncio.wait_for(self.write_message(orjson.dumps(EventSchema().dump(item))), SEND_TIMEOUT)
                self.after = item["id"]
            if page["next_cursor"] is None:
                return

    async def _pump(self) -> None:
        hub: events.Hub = self.application.settings["event_hub"]
        user_id = self.require_principal().user_id
        wake = hub.subscribe(user_id)
        unwatch = watch_revocation(self.rt, self.require_principal(), self._login_ended)
        loop = asyncio.get_running_loop()
        checked = loop.time()
        try:
            while True:
                wake.clear()  # before reading: an event committed from here on wakes the next round
                await self._send_new(user_id)
                if hub.closing:
                    self._close(CLOSE_RESTART, "The server is restarting")
                    return
                if loop.time() - checked >= self.ping_interval:
                    checked = loop.time()
                    await self.authenticate(self.rt, self.token)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.ping_interval)
        except errors.AuthError:
            self._login_ended()
        except errors.Forbidden as error:
            self._close(CLOSE_FORBIDDEN, f"Forbidden ({error.code})")
        except TimeoutError:
            self._close(CLOSE_TOO_SLOW, "Reading too slowly")
        except (websocket.WebSocketClosedError, iostream.StreamClosedError):
            pass
        except Exception as error:  # a dependency down, or a fault of ours: the client resumes later
            if not isinstance(error, errors.ServiceUnavailable):
                log.exception("event stream failed")
            self._close(CLOSE_UNAVAILABLE, "Service unavailable")
        finally:
            hub.unsubscribe(user_id, wake)
            unwatch()

    def _login_ended(self) -> None:
        self._close(CLOSE_REVOKED, "The login has ended")

    def _close(self, code: int, why: str) -> None:
        self.close(code, f"{why}; reconnect with ?after={self.after}")

    def check_origin(self, origin: str) -> bool:
        # Tokens are never cookies, so another site's page cannot ride a user's credentials here.
        return True


routes = [(r"/api/v1/events", EventListHandler), (r"/api/v1/events/stream", EventStreamHandler)]
