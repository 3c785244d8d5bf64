"""Smoke: the server answers health and readiness, and unknown paths get the contract's 404."""


def test_health_and_ready(server):
    import httpx

    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    r = httpx.get(f"{server.url}/ready")
    assert r.status_code == 200
    assert r.headers["X-Request-ID"]


def test_unknown_path_is_json_404(api):
    r = api.get("/nope")
    assert r.status_code == 404
    assert r.json()["code"] == "NOT_FOUND"
