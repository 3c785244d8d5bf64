"""Smoke: the server answers health (with its release) and readiness, and unknown paths get the contract's 404."""

import httpx
from conftest import checkout_release


def test_health_and_ready(server):
    r = httpx.get(f"{server.url}/ready")
    assert r.status_code == 200
    assert r.headers["X-Request-ID"]
    health = httpx.get(f"{server.url}/health").json()
    version, revision = checkout_release()
    assert health == {"status": "ok", "version": version, "revision": revision}


def test_unknown_path_is_json_404(api):
    r = api.get("/nope")
    assert r.status_code == 404
    assert r.json()["code"] == "NOT_FOUND"
