"""A Python client generated from the live server's /openapi.json by openapi-python-client, a tool no one here
wrote, runs the README walk-through: the operationIds are its function names, the request bodies its typed models,
and a refusal comes back as its Error model."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from conftest import PASSWORD, ROOT, make_user, unique_name

PACKAGE = "wallet_api_client"


@pytest.fixture(scope="session")
def spec(server) -> dict:
    return httpx.get(f"{server.url}/openapi.json").json()


@pytest.fixture(scope="session")
def generated(server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package, generated once per session; any warning of the generator (a construct it could not
    turn into code) fails it."""
    out = tmp_path_factory.mktemp("generated")
    config = out / "config.yaml"
    config.write_text("post_hooks: []\n")  # the generator would otherwise run ruff over its output: time, no value
    generate = [
        str(Path(sys.executable).parent / "openapi-python-client"),
        "generate",
        "--url",
        f"{server.url}/openapi.json",
        "--output-path",
        str(out / PACKAGE),
        "--meta",
        "none",
        "--config",
        str(config),
        "--fail-on-warning",
    ]
    done = subprocess.run(generate, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def snake(operation_id: str) -> str:
    return re.sub(r"(?=[A-Z])", "_", operation_id).lower()


def test_every_operation_is_a_function_named_after_its_operation_id_with_a_typed_body(generated, spec):
    api = Path(generated.__file__).parent / "api"
    functions = {(module.parent.name, module.stem) for module in api.glob("*/*.py") if module.stem != "__init__"}
    expected = {}
    for item in spec["paths"].values():
        for operation in item.values():
            # The generator names a tag's package in snake case ("Payment requests": payment_requests).
            expected[(operation["tags"][0].lower().replace(" ", "_"), snake(operation["operationId"]))] = operation
    assert functions == set(expected)
    typed = 0
    for (tag, name), operation in expected.items():
        if "requestBody" not in operation:
            continue
        module = importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")
        body = inspect.signature(module.sync_detailed).parameters["body"].annotation
        models = [t for t in typing.get_args(body) or (body,) if getattr(t, "__module__", "").startswith(PACKAGE)]
        assert models, (operation["operationId"], body)  # a model class, not Any
        typed += 1
    assert typed >= 20


def test_the_readme_walkthrough_through_the_generated_client(server, generated):
    from wallet_api_client import AuthenticatedClient, Client
    from wallet_api_client.api.auth import login, register
    from wallet_api_client.api.transactions import deposit, list_transactions, transfer
    from wallet_api_client.api.users import get_me
    from wallet_api_client.api.wallets import get_balance, list_wallets
    from wallet_api_client.models import Error, Login, Money, Register, Registered, TokenPair, Transfer

    alice, bob = unique_name("alice"), unique_name("bob")
    # Any status the document does not list raises instead of coming back as None.
    with Client(base_url=server.url, raise_on_unexpected_status=True) as anonymous:
        registered = register.sync(
            client=anonymous, body=Register(username=alice, password=PASSWORD, email=f"{alice}@example.com")
        )
        assert isinstance(registered, Registered), registered
        assert isinstance(register.sync(client=anonymous, body=Register(username=bob, password=PASSWORD)), Registered)
        tokens = login.sync(client=anonymous, body=Login(username=alice, password=PASSWORD))
        assert isinstance(tokens, TokenPair), tokens
        wrong = login.sync(client=anonymous, body=Login(username=alice, email=f"{alice}@example.com", password="x"))
        assert isinstance(wrong, Error) and wrong.code == "VALIDATION_ERROR"  # exactly one identifier, as before

    with AuthenticatedClient(base_url=server.url, token=tokens.access_token, raise_on_unexpected_status=True) as me:
        assert get_me.sync(client=me).username == alice
        wallets = list_wallets.sync(client=me)
        wallet = wallets.items[0]
        assert (wallet.id, wallet.balance) == (registered.wallet.id, "0.00")

        first = deposit.sync_detailed(wallet.id, client=me, body=Money(amount="50.00"), idempotency_key="deposit-001")
        replay = deposit.sync_detailed(wallet.id, client=me, body=Money(amount="50.00"), idempotency_key="deposit-001")
        assert (first.status_code, first.parsed.type_, first.parsed.amount) == (201, "DEPOSIT", "50.00")
        assert "Idempotent-Replayed" not in first.headers
        assert replay.status_code == 201
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert replay.parsed.id == first.parsed.id

        lunch = Transfer(from_wallet_id=wallet.id, to_username=bob, amount="12.50", description="lunch")
        sent = transfer.sync(client=me, body=lunch, idempotency_key="transfer-001")
        assert (sent.type_, sent.status, sent.amount) == ("TRANSFER", "COMPLETED", "12.50")
        refused = transfer.sync_detailed(
            client=me, body=Transfer(from_wallet_id=wallet.id, to_username=bob, amount="1000.00")
        )
        assert isinstance(refused.parsed, Error)
        assert (refused.status_code, refused.parsed.code) == (400, "INSUFFICIENT_FUNDS")

        balance = get_balance.sync(wallet.id, client=me)
        assert (balance.balance, balance.available_balance, balance.currency) == ("37.50", "37.50", "USD")
        history = list_transactions.sync(client=me, limit=10)
        assert [(t.type_, t.direction, t.amount, t.status) for t in history.items] == [
            ("TRANSFER", "out", "1000.00", "FAILED"),  # the refused one is kept, and named in the error
            ("TRANSFER", "out", "12.50", "COMPLETED"),
            ("DEPOSIT", "in", "50.00", "COMPLETED"),
        ]
        assert history.items[0].id == refused.parsed.transaction_id
        assert (history.items[1].counterparty.username, history.items[1].description) == (bob, "lunch")


def test_the_api_guides_example_runs_as_printed(server, generated, capsys):
    guide = (ROOT / "docs" / "api.md").read_text().split("### A generated Python client", 1)[1]
    example = re.search(r"```python\n(.*?)```", guide, re.S).group(1)
    alice = make_user(server).username  # the example's password is the one conftest registers with
    exec(example.replace("http://127.0.0.1:8000", server.url).replace('"alice"', repr(alice)), {})
    assert capsys.readouterr().out == "201 50.00 None\n"
