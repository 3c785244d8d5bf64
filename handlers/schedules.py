"""Scheduled transfer endpoints: make a one-off or recurring transfer, list and read them (with their occurrences),
pause, resume and cancel them. The scheduler that runs them is wallet/operations/schedules.py."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from handlers.base import BaseHandler, api, parse_uuid, requires
from handlers.field_types import CURRENCY, DECIMAL, Amount, Text, UtcDateTime, one_of_required
from handlers.money import TransferSchema
from handlers.schemas import CounterpartySchema, Output, PageQuery, TransactionSchema
from wallet.operations import schedules

TAG = "Schedules"  # the OpenAPI tag of this module's operations

STATUSES = ("ACTIVE", "PAUSED", "CANCELLED", "FINISHED")

# ---- requests ---------------------------------------------------------------------------------------------------


class ScheduleCreateSchema(TransferSchema):
    """A transfer's body (without quote_id) and when to make it."""

    json_schema = one_of_required(TransferSchema.RECIPIENTS)

    class Meta:
        exclude = ("quote_id",)

    amount = Amount(required=True, metadata={"description": "In the source currency, paid at each occurrence."})
    start_at = UtcDateTime(required=True, metadata={"description": "The first occurrence (not in the past)."})
    every = Text(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(["day", "week", "month"]),
        metadata={
            "description": "null: once. A month's occurrence in a month without start_at's day falls on its last."
        },
    )
    count = fields.Integer(
        load_default=None,
        strict=True,
        validate=validate.Range(min=1, max=1000),
        metadata={"description": "Occurrences."},
    )
    until = UtcDateTime(load_default=None, metadata={"description": "No occurrence after this moment."})

    @validates_schema
    def count_or_until(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("count") is not None and data.get("until") is not None:
            raise ValidationError("Give at most one of count, until.", "_schema")


class ScheduleQuery(PageQuery):
    status = Text(validate=validate.OneOf(STATUSES))


# ---- responses --------------------------------------------------------------------------------------------------


class ScheduleSchema(Output):
    id = fields.UUID()
    from_wallet_id = fields.UUID()
    to_wallet_id = fields.UUID()
    counterparty = fields.Nested(CounterpartySchema)
    amount = fields.String(validate=DECIMAL)
    currency = fields.String(validate=CURRENCY)
    description = fields.String(allow_none=True)
    start_at = UtcDateTime()
    every = fields.String(allow_none=True, validate=validate.OneOf(["day", "week", "month"]))
    count = fields.Integer(allow_none=True)
    until = UtcDateTime(allow_none=True)
    status = fields.String(validate=validate.OneOf(STATUSES))
    next_run_at = UtcDateTime(allow_none=True, metadata={"description": "null once no occurrence is left."})
    runs = fields.Integer(metadata={"description": "Occurrences run so far, paid or refused."})
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class OccurrenceSchema(Output):
    schedule_id = fields.UUID()
    occurrence = fields.Integer(metadata={"description": "Its number, from 0."})
    occurrence_date = fields.String(
        validate=validate.Regexp(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"),
        metadata={"description": "Its UTC date (YYYY-MM-DD): with the schedule id, its idempotency key."},
    )
    occurs_at = UtcDateTime()
    status = fields.String(validate=validate.OneOf(["COMPLETED", "FAILED"]))
    failure_code = fields.String(allow_none=True)
    failure_reason = fields.String(allow_none=True)
    ran_at = UtcDateTime()
    transaction = fields.Nested(TransactionSchema, allow_none=True)


class ScheduleDetailSchema(ScheduleSchema):
    occurrences = fields.List(fields.Nested(OccurrenceSchema), metadata={"description": "The latest 50, newest first."})


class ScheduleListSchema(Output):
    items = fields.List(fields.Nested(ScheduleSchema))
    next_cursor = fields.String(allow_none=True)


class ScheduleListHandler(BaseHandler):
    @api("createScheduledTransfer", {201: ScheduleSchema}, body=ScheduleCreateSchema, errors=(403, 404))
    @requires("transfer")
    async def post(self) -> None:
        """Schedule a transfer once, or every day, week or month (for `count` occurrences, `until` a moment, or until
        cancelled); each occurrence is a transfer, paid once."""
        data = self.load()
        self.step_up_above(data["amount"])
        recipient = {k: v for k, v in data.items() if k.startswith("to_")}
        schedule = await schedules.create(
            self.rt,
            self.principal,
            data["from_wallet_id"],
            recipient,
            data["amount"],
            data["description"],
            data["start_at"],
            data["every"],
            data["count"],
            data["until"],
        )
        self.respond(schedule, 201)

    @api("listScheduledTransfers", {200: ScheduleListSchema}, query=ScheduleQuery)
    @requires("read")
    async def get(self) -> None:
        """The caller's scheduled transfers, newest first, filtered by status."""
        self.respond(await schedules.list_schedules(self.rt, self.principal, **self.query()), 200)


class ScheduleHandler(BaseHandler):
    @api("getScheduledTransfer", {200: ScheduleDetailSchema})
    @requires("read")
    async def get(self, schedule_id: str) -> None:
        """One of the caller's scheduled transfers, with its latest occurrences."""
        found = await schedules.get_schedule(self.rt, self.principal, parse_uuid(schedule_id, "schedule_id"))
        self.respond(found, 200)


class ScheduleActionHandler(BaseHandler):
    action: str

    async def change(self, schedule_id: str) -> None:
        schedule = await schedules.change_status(
            self.rt, self.principal, parse_uuid(schedule_id, "schedule_id"), self.action
        )
        self.respond(schedule, 200)


class SchedulePauseHandler(ScheduleActionHandler):
    action = "pause"

    @api("pauseScheduledTransfer", {200: ScheduleSchema}, errors=(409,))
    @requires("transfer")
    async def post(self, schedule_id: str) -> None:
        """Stop running occurrences until resumed."""
        await self.change(schedule_id)


class ScheduleResumeHandler(ScheduleActionHandler):
    action = "resume"

    @api("resumeScheduledTransfer", {200: ScheduleSchema}, errors=(409,))
    @requires("transfer")
    async def post(self, schedule_id: str) -> None:
        """Run occurrences again, from the next one due from now (those that fell due while paused are skipped)."""
        await self.change(schedule_id)


class ScheduleCancelHandler(ScheduleActionHandler):
    action = "cancel"

    @api("cancelScheduledTransfer", {200: ScheduleSchema}, errors=(409,))
    @requires("transfer")
    async def post(self, schedule_id: str) -> None:
        """Run no more occurrences, ever."""
        await self.change(schedule_id)


routes = [
    (r"/api/v1/scheduled-transfers", ScheduleListHandler),
    (r"/api/v1/scheduled-transfers/([^/]+)", ScheduleHandler),
    (r"/api/v1/scheduled-transfers/([^/]+)/pause", SchedulePauseHandler),
    (r"/api/v1/scheduled-transfers/([^/]+)/resume", ScheduleResumeHandler),
    (r"/api/v1/scheduled-transfers/([^/]+)/cancel", ScheduleCancelHandler),
]
