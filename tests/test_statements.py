"""Statements over HTTP: balances over a period, JSON, CSV and PDF content, bad input, access, a snapshot under load."""

import csv
import datetime as dt
import io
import threading
import time
import unicodedata
from decimal import Decimal

import httpx
import pytest
from conftest import assert_audit_ok, assert_error, fund, make_user
from pypdf import PdfReader

from bench.statement import seed_entries

CSV_HEADER = "date,reference,type,description,counterparty,counterparty_wallet,money_in,money_out,balance"


def statement(server, user, wallet_id=None, **params):
    with server.client(user.token) as client:
        return client.get(f"/wallets/{wallet_id or user.wallet_id}/statement", params=params)


def ok_json(server, user, **params):
    r = statement(server, user, **params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.text.endswith("}\n")  # like every JSON answer
    return r.json()


def post(server, user, path, body, status=201):
    with server.client(user.token) as client:
        r = client.post(path, json=body)
    assert r.status_code == status, r.text
    return r.json()


@pytest.fixture(scope="module")
def story(server, database_url):
    """alice: before the boundary a deposit, a withdrawal and a FAILED withdrawal; after it, a transfer out to bob,
    one in from bob, and a deposit whose description is a spreadsheet formula. The ledger audits clean after."""
    alice, bob = make_user(server), make_user(server)
    fund(server, bob, "20")
    w = f"/wallets/{alice.wallet_id}"
    post(server, alice, f"{w}/deposit", {"amount": "50", "description": "salary"})
    post(server, alice, f"{w}/withdraw", {"amount": "5.25"})
    failed = post(server, alice, f"{w}/withdraw", {"amount": "999"}, status=400)
    time.sleep(0.2)
    boundary = dt.datetime.now(dt.UTC)
    time.sleep(0.2)
    post(server, alice, "/transfers", {"from_wallet_id": alice.wallet_id, "to_username": bob.username, "amount": "10"})
    post(server, bob, "/transfers", {"from_wallet_id": bob.wallet_id, "to_wallet_id": alice.wallet_id, "amount": "3"})
    post(server, alice, f"{w}/deposit", {"amount": "1", "description": '=HYPERLINK("http://x","pay")'})
    yield alice, bob, boundary, failed
    assert_audit_ok(database_url)


def test_whole_history_with_running_balances(server, story):
    alice, bob, _, failed = story
    body = ok_json(server, alice)
    assert body["wallet"] == {"id": alice.wallet_id, "number": alice.wallet_number, "name": None, "currency": "USD"}
    assert (body["opening_balance"], body["closing_balance"]) == ("0.00", "38.75")
    assert (body["total_in"], body["total_out"], body["entry_count"]) == ("54.00", "15.25", 5)
    rows = [(e["type"], e["direction"], e["amount"], e["balance"]) for e in body["entries"]]
    assert rows == [
        ("DEPOSIT", "in", "50.00", "50.00"),
        ("WITHDRAWAL", "out", "5.25", "44.75"),
        ("TRANSFER", "out", "10.00", "34.75"),
        ("TRANSFER", "in", "3.00", "37.75"),
        ("DEPOSIT", "in", "1.00", "38.75"),
    ]
    assert failed["transaction_id"] not in {e["transaction_id"] for e in body["entries"]}
    party = {"username": bob.username, "wallet_number": bob.wallet_number}
    assert [e["counterparty"] for e in body["entries"]] == [None, None, party, party, None]
    assert body["entries"][0]["description"] == "salary"
    assert all(e["reference"] for e in body["entries"])
    with server.client(alice.token) as client:
        assert client.get(f"/wallets/{alice.wallet_id}/balance").json()["balance"] == body["closing_balance"]


def test_a_period_opens_with_the_balance_before_it(server, story):
    alice, _, boundary, _ = story
    after = ok_json(server, alice, **{"from": boundary.isoformat()})
    assert (after["opening_balance"], after["closing_balance"]) == ("44.75", "38.75")
    assert (after["total_in"], after["total_out"], after["entry_count"]) == ("4.00", "10.00", 3)
    assert after["from"] == boundary.isoformat().replace("+00:00", "Z")
    before = ok_json(server, alice, to=boundary.isoformat())
    assert (before["opening_balance"], before["closing_balance"], before["entry_count"]) == ("0.00", "44.75", 2)
    assert [e["balance"] for e in before["entries"]] == ["50.00", "44.75"]


def test_empty_periods(server, story):
    alice = story[0]
    past = ok_json(server, alice, **{"from": "2020-01-01", "to": "2020-01-31"})
    assert past["entries"] == [] and past["entry_count"] == 0
    assert (past["opening_balance"], past["closing_balance"], past["total_in"]) == ("0.00", "0.00", "0.00")
    assert past["to"] == "2020-02-01T00:00:00Z"  # a bare `to` date includes that whole day
    later = (story[2] + dt.timedelta(days=2)).date().isoformat()  # two days after the story (boundary) happened
    future = ok_json(server, alice, **{"from": later, "to": "2099-12-31"})
    assert (future["opening_balance"], future["closing_balance"], future["entries"]) == ("38.75", "38.75", [])


def test_a_bare_to_date_includes_that_day(server, story):
    alice, _, boundary, _ = story  # the story's day (not the day this test runs: a run may cross midnight)
    assert ok_json(server, alice, to=boundary.date().isoformat())["entry_count"] == 5
    assert ok_json(server, alice, to=(boundary.date() - dt.timedelta(days=1)).isoformat())["entry_count"] == 0


def test_csv(server, story):
    alice, bob, boundary, _ = story
    r = statement(server, alice, format="csv", **{"from": boundary.isoformat()})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    day = dt.datetime.now(dt.UTC).date().isoformat()  # the default `to`: the moment of the request
    expected = f'attachment; filename="statement-{alice.wallet_number}-{boundary.date()}-{day}.csv"'
    assert r.headers["content-disposition"] == expected
    rows = list(csv.reader(io.StringIO(r.content.decode("utf-8"))))
    assert rows[0] == CSV_HEADER.split(",")
    body = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [(b["type"], b["money_in"], b["money_out"], b["balance"]) for b in body] == [
        ("TRANSFER", "", "10.00", "34.75"),
        ("TRANSFER", "3.00", "", "37.75"),
        ("DEPOSIT", "1.00", "", "38.75"),
    ]
    assert (body[0]["counterparty"], body[0]["counterparty_wallet"]) == (bob.username, bob.wallet_number)
    # A formula is kept as text: a spreadsheet shows it and never runs it.
    assert body[2]["description"] == '\'=HYPERLINK("http://x","pay")'
    assert dt.datetime.fromisoformat(body[0]["date"]) >= boundary


def test_csv_of_an_empty_period_is_its_header(server, story):
    r = statement(server, story[0], format="csv", **{"from": "2020-01-01", "to": "2020-01-02"})
    assert r.status_code == 200
    assert r.content.decode().splitlines() == [CSV_HEADER]


def test_csv_amounts_have_the_currency_digits(server):
    yen = make_user(server, currency="JPY")
    fund(server, yen, "500")
    r = statement(server, yen, format="csv")
    assert r.status_code == 200
    [row] = csv.DictReader(io.StringIO(r.text))
    assert (row["money_in"], row["balance"]) == ("500", "500")


def test_pdf(server, story):
    alice, bob, _, _ = story
    r = statement(server, alice, format="pdf")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf"
    day = dt.datetime.now(dt.UTC).date().isoformat()  # the default `to`: the moment of the request
    assert r.headers["content-disposition"].startswith(f'attachment; filename="statement-{alice.wallet_number}-')
    assert r.headers["content-disposition"].endswith(f'-{day}.pdf"')
    reader = PdfReader(io.BytesIO(r.content))
    assert len(reader.pages) == 1
    page = reader.pages[0]
    assert (page.mediabox.width, page.mediabox.height) == pytest.approx((595.28, 841.89), abs=0.1)  # A4
    text = page.extract_text()
    for expected in (
        "Account statement",
        alice.wallet_number,
        "USD",
        "Opening balance",
        "0.00",
        "Closing balance",
        "38.75",
        "54.00",
        "15.25",
        "44.75",
        "34.75",
        "37.75",
        bob.username,
        "salary",
        "Page 1 of 1",
    ):
        assert expected in text, expected


def test_pdf_draws_what_people_write_in_any_script_the_font_has(server):
    """Names and descriptions in Yoruba, Greek, Cyrillic or with a euro sign come out as written (the statement embeds
    a Unicode font); a character the font lacks (CJK, emoji) is '?'."""
    user = make_user(server)
    with server.client(user.token) as client:
        r = client.post("/wallets", json={"currency": "EUR", "name": "Ọmọ Ελλάδα €"})
        assert r.status_code == 201, r.text
    wallet_id = r.json()["id"]
    written = ("Adébáyọ̀ ṣe owó", "Иван Петров", "李 😀 gift")
    for description in written:
        post(server, user, f"/wallets/{wallet_id}/deposit", {"amount": "1", "description": description})
    r = statement(server, user, wallet_id=wallet_id, format="pdf")
    assert r.status_code == 200, r.text
    text = PdfReader(io.BytesIO(r.content)).pages[0].extract_text()
    assert "Ọmọ Ελλάδα €" in text
    assert unicodedata.normalize("NFC", written[0]) in unicodedata.normalize("NFC", text)
    assert "Иван Петров" in text and "? ? gift" in text


def test_pdf_pages_are_numbered_and_bounded(own_server):
    small = own_server(STATEMENT_PDF_MAX_ENTRIES="80", DB_POOL_SIZE="2", LOG_LEVEL="INFO")
    user = make_user(small)
    for _ in range(80):
        fund(small, user, "1")
    reader = PdfReader(io.BytesIO(statement(small, user, format="pdf").content))
    assert len(reader.pages) == 2
    assert "Page 2 of 2" in reader.pages[1].extract_text()
    assert "80.00" in reader.pages[1].extract_text()
    fund(small, user, "1")
    body = assert_error(statement(small, user, format="pdf"), 400, "VALIDATION_ERROR")
    assert "81 entries" in body["details"]["format"][0]
    assert statement(small, user, format="csv").status_code == 200  # CSV streams: no limit
    # The font subsetting's narration (fontTools, at INFO) stays out of the server's INFO log; the requests are in it.
    log = small.log_entries()
    assert not [e for e in log if e["logger"].startswith("fontTools")]
    assert [e for e in log if e.get("path", "").endswith("/statement") and e["status"] == 200]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"format": "xml"}, "format"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2024-13-01"}, "to"),
        ({"from": "2024-02-01", "to": "2024-01-31"}, "from"),
        ({"from": "2024-01-31T10:00:00Z", "to": "2024-01-31T10:00:00Z"}, "from"),
        ({"limit": "5"}, "limit"),
    ],
)
def test_bad_input_is_400(server, user, params, field):
    body = assert_error(statement(server, user, **params), 400, "VALIDATION_ERROR")
    assert field in body["details"], body


def test_not_your_wallet(server, user):
    other = make_user(server)
    assert_error(statement(server, user, wallet_id=other.wallet_id), 404, "NOT_FOUND")
    assert_error(statement(server, user, wallet_id=other.wallet_id, format="pdf"), 404, "NOT_FOUND")
    assert_error(statement(server, user, wallet_id="not-a-uuid"), 400, "VALIDATION_ERROR")
    with server.client() as client:
        assert_error(client.get(f"/wallets/{user.wallet_id}/statement"), 401, "AUTHENTICATION_REQUIRED")


def test_a_statement_is_one_snapshot_while_money_moves(server, database_url):
    """Deposits land while statements stream: each statement's entries add up to its own closing balance."""
    user = make_user(server)
    fund(server, user, "1")
    stop = threading.Event()

    def deposit() -> None:
        with server.client(user.token) as client:
            while not stop.is_set():
                assert client.post(f"/wallets/{user.wallet_id}/deposit", json={"amount": "0.01"}).status_code == 201

    threads = [threading.Thread(target=deposit) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for fmt in ("json", "csv") * 3:
            r = statement(server, user, format=fmt)
            assert r.status_code == 200
            if fmt == "json":
                body = r.json()
                entries = body["entries"]
                assert len(entries) == body["entry_count"]
                closing = Decimal(body["closing_balance"])
                assert sum(Decimal(e["amount"]) for e in entries) == closing
                assert Decimal(entries[-1]["balance"]) == closing
            else:
                rows = list(csv.DictReader(io.StringIO(r.text)))
                assert sum(Decimal(row["money_in"]) for row in rows) == Decimal(rows[-1]["balance"])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert_audit_ok(database_url)


def test_a_long_statement_streams_in_batches(server, db, database_url):
    """2,500 entries (three batches): every running balance follows from the one before, in JSON and CSV alike, and
    a client that leaves mid-stream costs the server nothing (it answers the next statement)."""
    user = make_user(server)
    with db.cursor() as cur:
        seed_entries(cur, user.wallet_id, user.id, 2500)
    body = ok_json(server, user)
    entries = body["entries"]
    assert body["entry_count"] == len(entries) == 2500
    running = Decimal(body["opening_balance"])
    for e in entries:
        running += Decimal(e["amount"]) * (1 if e["direction"] == "in" else -1)
        assert Decimal(e["balance"]) == running
    assert body["closing_balance"] == entries[-1]["balance"] == "1250.00"
    rows = list(csv.DictReader(io.StringIO(statement(server, user, format="csv").text)))
    assert [row["balance"] for row in rows] == [e["balance"] for e in entries]

    path = f"/wallets/{user.wallet_id}/statement"
    with server.client(user.token) as client, client.stream("GET", path, params={"format": "csv"}) as r:
        next(r.iter_bytes(1024))
        left = r.headers["x-request-id"]
    assert ok_json(server, user)["entry_count"] == 2500
    time.sleep(0.5)  # the abandoned request notices at its next flush
    assert not [line for line in server.log_path.read_text().splitlines() if left in line and '"error"' in line]
    assert_audit_ok(database_url)


def test_the_openapi_document_describes_the_three_formats(server):
    spec = httpx.get(f"{server.url}/openapi.json").json()
    operation = spec["paths"]["/api/v1/wallets/{wallet_id}/statement"]["get"]
    content = operation["responses"]["200"]["content"]
    assert set(content) == {"application/json", "text/csv; charset=utf-8", "application/pdf"}
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Statement"}
    statement_schema = spec["components"]["schemas"]["Statement"]
    assert {"opening_balance", "closing_balance", "total_in", "total_out", "entries"} <= set(
        statement_schema["required"]
    )
    format_parameter = next(p for p in operation["parameters"] if p.get("name") == "format")
    assert format_parameter["schema"]["enum"] == ["json", "csv", "pdf"]
    assert {"400", "401", "404"} <= set(operation["responses"])


def test_an_admin_reads_any_users_statement(server, story, admin):
    alice, bob, _, _ = story
    path = f"/admin/users/{alice.id}/wallets/{alice.wallet_id}/statement"
    with server.client(admin.token) as client:
        r = client.get(path, params={"format": "csv"})
        assert r.status_code == 200, r.text
        assert r.text == statement(server, alice, format="csv").text
        assert client.get(path).json()["closing_balance"] == "38.75"
        # the wallet must be that user's
        assert_error(client.get(f"/admin/users/{bob.id}/wallets/{alice.wallet_id}/statement"), 404, "NOT_FOUND")
    with server.client(alice.token) as client:
        assert_error(client.get(path), 403, "FORBIDDEN")
