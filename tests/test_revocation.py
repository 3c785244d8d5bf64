"""Revoked logins stay revoked across restarts: Redis coming back empty, and the server restarted without Redis.
Each way of ending a login is tried (logout, deactivation, password change, refresh-token reuse); PostgreSQL is the
truth, so every one of those access tokens answers 401 TOKEN_REVOKED on reads and writes alike."""

from __future__ import annotations

import time
import uuid

from conftest import PASSWORD, User, assert_error, in_parallel, log_in, make_user, unique_phone

from scripts.local_services import free_port, start_redis


def end_logins_every_way(server) -> dict[str, User]:
    """A user whose access token was revoked by each way there is, by name."""
    ended = {"logout": make_user(server), "deactivation": make_user(server), "refresh reuse": make_user(server)}
    changer = make_user(server)
    ended["password change"] = log_in(server, changer.username)  # the other login, ended by the change
    with server.client() as api:
        assert api.post("/auth/logout", headers=ended["logout"].headers).status_code == 204
        assert api.delete("/users/me", headers=ended["deactivation"].headers).status_code == 204
        reused = ended["refresh reuse"].refresh_token
        assert api.post("/auth/refresh", json={"refresh_token": reused}).status_code == 200
        assert_error(api.post("/auth/refresh", json={"refresh_token": reused}), 401, "TOKEN_REVOKED")
        change = {"password": "a-new-password-7", "current_password": PASSWORD}
        assert api.patch("/users/me", json=change, headers=changer.headers).status_code == 200
    return ended


def assert_revoked(server, ended: dict[str, User], alive: User) -> None:
    with server.client() as api:
        for how, user in ended.items():
            for answer in (
                api.get("/users/me", headers=user.headers),
                api.post("/wallets", json={"currency": "EUR"}, headers=user.headers),
                api.patch("/users/me", json={"phone": unique_phone()}, headers=user.headers),
            ):
                assert answer.status_code == 401, (how, answer.request.method, answer.text)
                assert_error(answer, 401, "TOKEN_REVOKED")
        assert api.get("/users/me", headers=alive.headers).status_code == 200


def test_revocations_survive_redis_restarting_empty_and_a_server_restart_without_redis(own_server, tmp_path):
    port = free_port()
    redis = start_redis(port, tmp_path)
    try:
        server = own_server(
            DB_POOL_SIZE="4", REDIS_URL=f"redis://127.0.0.1:{port}/0", REDIS_PREFIX=f"t-{uuid.uuid4().hex[:8]}:"
        )
        ended, alive = end_logins_every_way(server), make_user(server)
        assert_revoked(server, ended, alive)

        redis.terminate()
        redis.wait(10)
        redis = start_redis(port, tmp_path)  # the same address, with nothing in it
        with server.client() as api:  # the server's connections to the old Redis are gone: it reconnects
            for _ in range(20):
                if api.get("/users/me", headers=alive.headers).status_code == 200:
                    break
        assert_revoked(server, ended, alive)

        server.stop()
        server.env["REDIS_URL"] = ""  # a plain restart, now keeping its state in memory only
        server.start()
        assert_revoked(server, ended, alive)
    finally:
        redis.terminate()
        redis.wait(10)


def test_a_revocation_by_another_process_reaches_this_one_without_redis(own_server):
    """Two servers without Redis share only PostgreSQL: a logout on one is refused by the other within a poll."""
    first = own_server(DB_POOL_SIZE="4", REDIS_URL="")
    second = own_server(DB_POOL_SIZE="4", REDIS_URL="")
    user = make_user(first)
    with second.client() as api:
        assert api.get("/users/me", headers=user.headers).status_code == 200
    with first.client() as api:
        assert api.post("/auth/logout", headers=user.headers).status_code == 204

    deadline = time.monotonic() + 5
    with second.client() as api:
        while api.get("/users/me", headers=user.headers).status_code == 200:
            assert time.monotonic() < deadline, "the other process never learned of the logout"
            time.sleep(0.1)
        assert_error(api.get("/users/me", headers=user.headers), 401, "TOKEN_REVOKED")


def test_requests_read_together_each_learn_their_own_login_s_revocation_from_redis(own_server):
    """A logout on one server reaches another at once through Redis (its poll of PostgreSQL is a minute away here).
    Concurrent requests read their flags together in one round trip (wallet/platform/store.py): each is answered for
    its own login, revoked or alive."""
    first = own_server(DB_POOL_SIZE="4")
    second = own_server(DB_POOL_SIZE="4", REVOCATION_POLL_INTERVAL="60")
    ended, alive = [make_user(first) for _ in range(4)], [make_user(first) for _ in range(4)]
    with first.client() as api:
        for user in ended:
            assert api.post("/auth/logout", headers=user.headers).status_code == 204
    users = ended + alive

    with second.client() as api:
        answers = in_parallel(40, lambda i: api.get("/users/me", headers=users[i % 8].headers))
    for i, answer in enumerate(answers):
        if i % 8 < 4:
            assert_error(answer, 401, "TOKEN_REVOKED")
        else:
            assert answer.status_code == 200, answer.text
