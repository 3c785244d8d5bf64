"""gzip where it is worth it: the web wallet's files and JSON answers of a kilobyte or more, to a client that accepts
it; small answers (the money paths') as they are; `Vary: Accept-Encoding` on both; ETags and ranges unchanged."""

from __future__ import annotations

import httpx
from conftest import fund, make_user

from handlers.base import Compress
from handlers.webapp import WEB_DIR, web_version

GZIP = {"Accept-Encoding": "gzip"}
IDENTITY = {"Accept-Encoding": "identity"}


def assert_varies(r: httpx.Response) -> None:
    assert "Accept-Encoding" in [v.strip() for v in r.headers["Vary"].split(",")], r.headers


def test_a_large_web_file_comes_gzipped_a_small_one_as_it_is(server):
    large = f"{server.url}/v/{web_version()}/js/views/admin.js"
    r = httpx.get(large, headers=GZIP)
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
    assert r.content == (WEB_DIR / "js/views/admin.js").read_bytes()  # httpx undid the gzip
    assert r.num_bytes_downloaded < len(r.content) / 2
    assert_varies(r)
    plain = httpx.get(large, headers=IDENTITY)
    assert "Content-Encoding" not in plain.headers and plain.content == r.content
    assert_varies(plain)

    for path, file in (("/web/img/icon.svg", "img/icon.svg"), (f"/v/{web_version()}/js/theme.js", "js/theme.js")):
        assert (WEB_DIR / file).stat().st_size < Compress.MIN_LENGTH
        small = httpx.get(f"{server.url}{path}", headers=GZIP)
        assert small.status_code == 200 and "Content-Encoding" not in small.headers, path
        assert_varies(small)

    page = httpx.get(f"{server.url}/", headers=GZIP)
    assert page.headers["Content-Encoding"] == "gzip" and "<title>Wallet</title>" in page.text
    png = httpx.get(f"{server.url}/web/img/icon-512.png", headers=GZIP)  # compressed already: sent as it is
    assert "Content-Encoding" not in png.headers and "Vary" not in png.headers


def test_a_web_file_s_etag_and_a_range_are_as_without_gzip(server):
    url = f"{server.url}/web/css/app.css"
    zipped, plain = httpx.get(url, headers=GZIP), httpx.get(url, headers=IDENTITY)
    assert zipped.headers["Content-Encoding"] == "gzip" and zipped.headers["ETag"] == plain.headers["ETag"]
    again = httpx.get(url, headers={**GZIP, "If-None-Match": zipped.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    part = httpx.get(url, headers={**GZIP, "Range": "bytes=0-99"})
    assert part.status_code == 206 and "Content-Encoding" not in part.headers
    assert part.content == plain.content[:100]


def test_a_large_json_answer_comes_gzipped_the_money_paths_small_ones_as_they_are(server):
    user = make_user(server)
    with server.client(user.token) as client:
        deposits = [
            client.post(f"/wallets/{user.wallet_id}/deposit", json={"amount": "1.00"}, headers=GZIP) for _ in range(6)
        ]
        for r in deposits:
            assert r.status_code == 201 and "Content-Encoding" not in r.headers, r.headers
            assert len(r.content) < Compress.MIN_LENGTH
            assert_varies(r)
        for path in (f"/wallets/{user.wallet_id}/balance", "/users/me"):
            r = client.get(path, headers=GZIP)
            assert r.status_code == 200 and "Content-Encoding" not in r.headers
            assert_varies(r)

        history = client.get("/transactions", headers=GZIP)
        assert history.status_code == 200 and history.headers["Content-Encoding"] == "gzip"
        assert len(history.json()["items"]) == 6
        assert history.num_bytes_downloaded < len(history.content) / 2
        assert_varies(history)
        plain = client.get("/transactions", headers=IDENTITY)
        assert "Content-Encoding" not in plain.headers and plain.content == history.content
        # The ETag is the content's, whichever coding carried it: a 304 either way, a new answer once it changed.
        assert plain.headers["ETag"] == history.headers["ETag"]
        again = client.get("/transactions", headers={**GZIP, "If-None-Match": history.headers["ETag"]})
        assert again.status_code == 304 and again.content == b""
    fund(server, user, "1.00")
    with server.client(user.token) as client:
        changed = client.get("/transactions", headers={**GZIP, "If-None-Match": history.headers["ETag"]})
        assert changed.status_code == 200 and changed.headers["Content-Encoding"] == "gzip"
        assert len(changed.json()["items"]) == 7
