"""Statement endpoints (the owner's and an admin's): a wallet's statement, streamed as JSON or CSV, or a PDF."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import orjson
from marshmallow import ValidationError, fields, validate, validates_schema
from tornado import iostream

from handlers.base import BaseHandler, Verb, admin_only, api, parse_uuid, requires
from handlers.field_types import (
    CURRENCY,
    DECIMAL,
    TRANSACTION_TYPES,
    Text,
    UtcDateTime,
)
from handlers.schemas import CounterpartySchema, Output, PeriodQuery
from wallet.operations import statements

TAG = "Statements"  # the OpenAPI tag of this module's operations

# ---- requests ---------------------------------------------------------------------------------------------------


class StatementQuery(PeriodQuery):
    format = Text(
        load_default="json",
        validate=validate.OneOf(["json", "csv", "pdf"]),
        metadata={"description": "json (the default), csv or pdf; from defaults to the wallet's opening, to to now."},
    )

    @validates_schema
    def ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if "from_" in data and "to" in data and data["from_"] >= data["to"]:
            raise ValidationError("Must be before `to`.", "from")


# ---- responses --------------------------------------------------------------------------------------------------


class StatementWalletSchema(Output):
    id = fields.UUID()
    number = fields.String(validate=validate.Regexp(r"^[0-9]{10}$"))
    name = fields.String(allow_none=True)
    currency = fields.String(validate=CURRENCY)


class StatementEntrySchema(Output):
    transaction_id = fields.UUID()
    reference = fields.String()
    type = fields.String(validate=validate.OneOf(TRANSACTION_TYPES))
    description = fields.String(allow_none=True)
    counterparty = fields.Nested(CounterpartySchema, allow_none=True)
    direction = fields.String(validate=validate.OneOf(["in", "out"]))
    amount = fields.String(validate=DECIMAL)
    balance = fields.String(validate=DECIMAL, metadata={"description": "The wallet's balance after this entry."})
    created_at = UtcDateTime()


class StatementSchema(Output):
    wallet = fields.Nested(StatementWalletSchema)
    from_ = UtcDateTime(data_key="from", attribute="since")
    to = UtcDateTime(attribute="until", metadata={"description": "The end of the period, excluded."})
    opening_balance = fields.String(validate=DECIMAL)
    closing_balance = fields.String(validate=DECIMAL)
    total_in = fields.String(validate=DECIMAL)
    total_out = fields.String(validate=DECIMAL)
    entry_count = fields.Integer()
    entries = fields.List(fields.Nested(StatementEntrySchema), metadata={"description": "Oldest first."})


_HEAD = StatementSchema(exclude=("entries",))
_ENTRIES = StatementEntrySchema(many=True)
CSV = "text/csv; charset=utf-8"
PDF = "application/pdf"


# Both routes answer the same way; the OpenAPI document describes the three media types.
def _declared(operation_id: str) -> Callable[[Verb], Verb]:
    """The declaration both statements share (the owner's and an admin's), under their own operationIds."""
    return api(
        operation_id,
        {200: StatementSchema},
        query=StatementQuery,
        alternatives={
            CSV: {"type": "string", "description": "A header row, then one row per entry (format=csv)."},
            PDF: {"type": "string", "contentMediaType": PDF, "description": "An A4 statement (format=pdf)."},
        },
    )


class StatementHandler(BaseHandler):
    async def send(self, owner_id: uuid.UUID, wallet_id: str) -> None:
        """Stream the statement of `owner_id`'s wallet in the format asked for (anyone else's wallet is 404)."""
        query = self.query()
        kind = query["format"]
        async with statements.open_statement(
            self.rt,
            owner_id,
            parse_uuid(wallet_id, "wallet_id"),
            query.get("since"),
            query.get("until"),
            self.rt.settings.statement_pdf_max_entries if kind == "pdf" else None,
        ) as statement:
            if kind != "json":
                self.set_header("Content-Type", CSV if kind == "csv" else PDF)
                self.set_header("Content-Disposition", f'attachment; filename="{statement.filename_stem}.{kind}"')
            try:
                await getattr(self, f"_write_{kind}")(statement)
            except iostream.StreamClosedError:
                return  # the client left mid-stream: stop reading; there is no one to answer
        self.finish()

    async def _write_json(self, statement: statements.Statement) -> None:
        # The object without its entries, reopened to append them a batch at a time: `{..., "entries": [...]}`.
        self.write(orjson.dumps(_HEAD.dump(statement))[:-1] + b',"entries":[')
        separator = b""
        async for batch in statement.batches:
            items = orjson.dumps(_ENTRIES.dump(batch))[1:-1]
            if items:
                self.write(separator + items)
                separator = b","
            await self.flush()
        self.write(b"]}\n")  # a newline, like every JSON answer

    async def _write_csv(self, statement: statements.Statement) -> None:
        self.write(statements.csv_rows([], header=True))
        async for batch in statement.batches:
            self.write(statements.csv_rows(batch))
            await self.flush()

    async def _write_pdf(self, statement: statements.Statement) -> None:
        # fpdf2 is CPU-bound: build off the event loop, a batch at a time, then send the file.
        pdf = await self.rt.run_cpu(_start_pdf, statement)
        async for batch in statement.batches:
            await self.rt.run_cpu(pdf.add, batch)
        self.write(await self.rt.run_cpu(pdf.finish))


def _start_pdf(statement: statements.Statement) -> Any:
    """A statement's PDF, begun. fpdf2 and fontTools load here, with the first PDF a process makes: they are about a
    tenth of what every start of the server (and of each command line tool) would import otherwise."""
    from wallet.operations.statement_pdf import StatementPdf

    return StatementPdf(statement)


class WalletStatementHandler(StatementHandler):
    @_declared("getStatement")
    @requires("read")
    async def get(self, wallet_id: str) -> None:
        """A wallet's statement: opening balance, every entry with its running balance, closing balance, totals.

        Entries are read and sent in batches, so a long period costs the server no more memory than a short one
        (the PDF, built whole, is limited to STATEMENT_PDF_MAX_ENTRIES entries: 400 above). CSV and PDF come as
        downloads named statement-<wallet number>-<first day>-<last day>.
        """
        await self.send(self.principal.user_id, wallet_id)


class AdminStatementHandler(StatementHandler):
    @_declared("getUserStatement")
    @admin_only
    async def get(self, user_id: str, wallet_id: str) -> None:
        """Any user's wallet statement, as the owner gets it (a wallet that is not that user's is 404)."""
        await self.send(parse_uuid(user_id, "user_id"), wallet_id)


routes = [
    (r"/api/v1/wallets/([^/]+)/statement", WalletStatementHandler),
    (r"/api/v1/admin/users/([^/]+)/wallets/([^/]+)/statement", AdminStatementHandler),
]
