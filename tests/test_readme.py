"""The README's curl walk-through runs as printed against a real server."""

import re
import subprocess
from pathlib import Path

from conftest import unique_name

README = Path(__file__).resolve().parent.parent / "README.md"


def test_curl_walkthrough_runs_as_printed(server):
    text = README.read_text()
    section = text.split("## Walk-through with curl", 1)[1]
    script = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    # Fresh names, so the walk-through cannot collide with users other tests made.
    alice, bob = unique_name("alice"), unique_name("bob")
    script = script.replace("http://127.0.0.1:8000", server.url).replace("alice", alice).replace("bob", bob)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f'"username":"{alice}"' in out
    assert '"type":"DEPOSIT","status":"COMPLETED","amount":"50.00"' in out
    assert '"type":"TRANSFER","status":"COMPLETED","amount":"12.50"' in out
    assert f'"counterparty":{{"username":"{bob}"' in out
    assert "date,reference,type,description,counterparty,counterparty_wallet,money_in,money_out,balance" in out
    assert f"TRANSFER,lunch,{bob}," in out
    assert out.rstrip().endswith('"balance":"37.50","available_balance":"37.50","at":null}')
