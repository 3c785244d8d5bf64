"""A statement as an A4 PDF (fpdf2): a summary, then a table of entries with page headers and page numbers."""

from __future__ import annotations

import datetime as dt
import functools
import unicodedata
from pathlib import Path
from typing import Any

from fontTools.ttLib import TTFont
from fpdf import FPDF

from wallet.operations.statements import Statement

LEFT, RIGHT, TOP, BOTTOM = 12.0, 198.0, 14.0, 282.0  # mm on a 210 x 297 page
LINE = 4.0
# What people write (descriptions, wallet names) is drawn in DejaVu Sans Mono (wallet/operations/fonts/, its licence
# beside it), embedded as a subset of the glyphs used: Latin with every accent, Greek, Cyrillic, and more. Fixed text
# stays in the core fonts. Both monospaced fonts advance 0.6 em a character, so the bold Courier column titles line up
# over the rows: 128 columns at 6.8 pt fill the 186 mm between the margins.
FONT_FILE = Path(__file__).resolve().parent / "fonts" / "DejaVuSansMono.ttf"
TEXT_FONT = "DejaVuSansMono"
TABLE_SIZE = 6.8
# Columns: (title, width in characters, right-aligned); amounts fit 1,000,000,000,000.00 less its commas.
COLUMNS = (
    ("Date (UTC)", 16, False),
    ("Reference", 18, False),
    ("Type", 10, False),
    ("Details", 30, False),
    ("In", 16, True),
    ("Out", 16, True),
    ("Balance", 16, True),
)


@functools.cache
def _glyphs() -> frozenset[int]:
    """The code points the embedded font can draw."""
    return frozenset(TTFont(FONT_FILE, lazy=True).getBestCmap())


def _printable(value: str) -> str:
    """Text as the embedded font draws it: composed (NFC: a letter and its accent as one character where Unicode has
    one), and any character without a glyph (CJK, emoji) as '?', as the core fonts showed all but Latin-1 before."""
    if value.isascii():
        return value
    glyphs = _glyphs()
    return "".join(c if ord(c) in glyphs else "?" for c in unicodedata.normalize("NFC", value))


def _utc(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")


def _row(values: tuple[str, ...]) -> str:
    cells = []
    for (_, width, right), value in zip(COLUMNS, values, strict=True):
        if len(value) > width:
            value = value[: width - 3] + "..."
        cells.append(value.rjust(width) if right else value.ljust(width))
    return " ".join(cells)


class StatementPdf(FPDF):
    """Built a batch of entries at a time (add), then written out once (finish). Each table row is one text() call
    in a monospaced font, padded by character count: fpdf2's cell() and string measuring cost ~20x more, and
    100,000 entries must stay in seconds."""

    def __init__(self, statement: Statement) -> None:
        super().__init__(format="A4", unit="mm")
        self.statement = statement
        self.set_auto_page_break(False)
        self.set_title(f"Statement {statement.wallet['number']}")
        self.add_font(TEXT_FONT, fname=FONT_FILE)
        self.set_creator("Wallet API")
        self.alias_nb_pages("{pages}")
        self.y_line = TOP
        self.add_page()
        self._summary()
        self._table_header()

    def footer(self) -> None:
        self.set_font("Helvetica", size=7)
        self.text(LEFT, 290, f"Wallet {self.statement.wallet['number']}")
        # {pages}: fpdf2 puts the page count in when it writes the file (in cells only, not in text()), in the room
        # of as many digits as the alias has characters; left-aligned, so what it leaves over is blank.
        self.set_xy(RIGHT - 24, 287.5)
        self.cell(24, 3.5, f"Page {self.page_no()} of {{pages}}")

    def _summary(self) -> None:
        s = self.statement
        self.set_font("Helvetica", "B", 16)
        self.text(LEFT, self.y_line + 4, "Account statement")
        self.y_line += 14
        name = f" ({s.wallet['name']})" if s.wallet["name"] else ""
        rows = (
            ("Wallet", _printable(f"{s.wallet['number']}{name}")),
            ("Currency", s.wallet["currency"]),
            ("Period", f"{_utc(s.since)} to {_utc(s.until)} UTC (end excluded)"),
            ("Opening balance", s.opening_balance),
            ("Money in", s.total_in),
            ("Money out", s.total_out),
            ("Closing balance", s.closing_balance),
            ("Entries", str(s.entry_count)),
        )
        for label, value in rows:
            self.set_font("Helvetica", "B", 9)
            self.text(LEFT, self.y_line, label)
            self.set_font(TEXT_FONT, size=9)
            self.text(LEFT + 32, self.y_line, value)
            self.y_line += 5
        self.y_line += 4

    def _table_header(self) -> None:
        self.set_font("Courier", "B", TABLE_SIZE)
        self.text(LEFT, self.y_line, _row(tuple(title for title, _, _ in COLUMNS)))
        self.line(LEFT, self.y_line + 1.2, RIGHT, self.y_line + 1.2)
        self.y_line += LINE + 0.8
        self.set_font(TEXT_FONT, size=TABLE_SIZE)

    def add(self, entries: list[dict[str, Any]]) -> None:
        for e in entries:
            if self.y_line > BOTTOM:
                self.add_page()
                self.y_line = TOP
                self._table_header()
            party = e["counterparty"]
            parts = (party and f"{party['username']} {party['wallet_number']}", e["description"])
            incoming = e["direction"] == "in"
            values = (
                _utc(e["created_at"]),
                e["reference"],
                e["type"],
                _printable(" - ".join(part for part in parts if part)),
                e["amount"] if incoming else "",
                "" if incoming else e["amount"],
                e["balance"],
            )
            self.text(LEFT, self.y_line, _row(values))
            self.y_line += LINE

    def finish(self) -> bytes:
        if self.statement.entry_count == 0:
            self.set_font("Helvetica", "I", 8)
            self.text(LEFT, self.y_line, "No entries in this period.")
        return bytes(self.output())
