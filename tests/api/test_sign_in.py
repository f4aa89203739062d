"""Signing up and in on SQLite and PostgreSQL: /register, /login, /token_refresh and the UI's cookie flow
end to end with a real cookie jar (the sliding refresh included), the admin bootstrap, the worker account,
the notes' refusals and what each attempt leaves on the log."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from freezegun import freeze_time

from chainloom.infra.settings import Settings
from chainloom.infra.timefmt import parse_ns
from tests.api.helpers import assert_error, call
from tests.api.identity_helpers import FULL_USER_KEYS, bearer, claims_of, identity_settings, login, register
from tests.integration.serve_process import log_events

ADMIN = "admin@admin.com"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return identity_settings(settings)


@pytest.fixture
def secured(settings: Settings) -> Settings:
    return settings.model_copy(update={"security_enabled": True})


def _cookie_header(response: aiohttp.ClientResponse) -> SimpleCookie:
    [header] = response.headers.getall("Set-Cookie")
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(header)
    return cookie


def _server(entries: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    return [(e["resource"], e["resourceType"], e["permission"]) for e in entries]


async def test_a_registration_answers_the_user_and_a_token_carrying_its_entry(client, settings):
    answer = await register(client, "jane@x.io", "pw", friendlyName="Jane", allowedResources=[{"name": "server"}])
    user = answer["user"]
    assert set(user) == FULL_USER_KEYS
    assert (user["friendlyName"], user["email"], user["subject"]) == ("Jane", "jane@x.io", user["id"])
    assert user["hashedPassword"] == user["recoveryCodeHash"] == user["salt"] == ""
    claims = claims_of(answer["token"])
    assert (claims["sub"], claims["identity"]) == (user["id"], user["id"])
    assert claims["exp"] - claims["iat"] == 3600
    assert parse_ns(answer["expires_at"]) == claims["exp"] * 10**9
    # allowedResources is ignored: a registration gets `server`, none (manage for the admin).
    assert _server(claims["permissions"]) == [("server", "system", 0)]
    admin = await register(client, ADMIN)
    assert _server(claims_of(admin["token"])["permissions"]) == [("server", "system", 3)]
    assert_error(*await call(client, "POST", "/register", {"email": "Admin@Admin.com", "password": "x"}), 409, "unique constraint violation")
    # Signing in gives the same user, and a token with its entries as they are now.
    status, granted = await call(client, "POST", "/access-control", {"identity": user["id"], "resource": "chatservice",
                                                                     "resourceType": "system", "permission": "view"})
    assert status == 201, granted
    signed_in = await login(client, "JANE@x.io", "pw")
    assert signed_in["user"] == user
    assert sorted(_server(claims_of(signed_in["token"])["permissions"])) == [("chatservice", "system", 1), ("server", "system", 0)]


async def test_sign_ins_are_refused_with_the_notes_messages_and_recorded(client, settings):
    jane = (await register(client, "jane@x.io", "pw"))["user"]
    await register(client, "nopw@x.io", "")
    refusals = [
        ({"email": "jane@x.io", "password": "PW"}, "invalid credentials"),
        ({"email": "nobody@x.io", "password": "pw"}, "libdb: not found"),
        ({"email": "nopw@x.io", "password": ""}, "direct login for this user is disabled"),
    ]
    for body, fragment in refusals:
        assert_error(*await call(client, "POST", "/login", body), 401, fragment)
        assert_error(*await call(client, "POST", "/ui/login", body), 401, fragment)
    assert_error(*await call(client, "POST", "/login", b"{not json"), 422, "invalid JSON")
    # The older platform's clients get 403 and the flat body for every refusal of an Authorize route.
    status, flat = await call(client, "POST", "/api/login", refusals[0][0])
    assert (status, flat) == (403, {"error": "invalid credentials"})

    events = [e for e in log_events(settings) if e["event_type"] in ("user.sign_in_failed", "sign_in.refused")]
    assert [(e["event_type"], e["data"]) for e in events if e["aggregate_id"] == jane["id"]] == [
        ("user.sign_in_failed", {"reason": "invalid credentials"})
    ] * 3
    assert [e["data"] for e in events if e["event_type"] == "sign_in.refused"] == [{"email": "nobody@x.io"}] * 2


async def test_a_token_is_refreshed_with_its_claims(service_for, secured):
    async with service_for(secured) as client:
        answer = await register(client, "jane@x.io")
        status, refreshed = await call(client, "POST", "/token_refresh", {"token": answer["token"]})
        assert status == 200, refreshed
        old, new = claims_of(answer["token"]), claims_of(refreshed["token"])
        assert {k: new[k] for k in ("sub", "identity", "permissions")} == {k: old[k] for k in ("sub", "identity", "permissions")}
        assert new["exp"] >= old["exp"]
        assert (await call(client, "GET", "/ui/me", headers=bearer(refreshed["token"])))[1] == answer["user"]
        assert_error(*await call(client, "POST", "/token_refresh", {"token": "garbage"}), 401,
                     "token is malformed: token contains an invalid number of segments")  # fmt: skip
        tampered = answer["token"][:-4] + ("AAAA" if not answer["token"].endswith("AAAA") else "BBBB")
        assert_error(*await call(client, "POST", "/token_refresh", {"token": tampered}), 401, "invalid token claims")
        assert (await call(client, "POST", "/api/token_refresh", {"token": "garbage"}))[0] == 403


async def test_with_security_off_a_refresh_answers_an_empty_token(client):
    answer = await register(client, "jane@x.io")
    assert await call(client, "POST", "/token_refresh", {"token": answer["token"]}) == (200, {"token": ""})
    assert await call(client, "POST", "/token_refresh", {"token": "garbage"}) == (200, {"token": ""})


async def test_the_ui_cookie_flow_end_to_end(service_for, secured):
    async with service_for(secured) as client, aiohttp.ClientSession(
        base_url=client.make_url("/"), cookie_jar=aiohttp.CookieJar(unsafe=True)
    ) as browser:
        async with browser.post("/ui/register", json={"email": ADMIN, "password": "pw", "friendlyName": "Root"}) as response:
            assert response.status == 201, await response.text()
            user = await response.json()
            cookie = _cookie_header(response)["auth_token"]
        assert set(user) == FULL_USER_KEYS and user["friendlyName"] == "Root"
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/" and not cookie["secure"]
        assert parsedate_to_datetime(cookie["expires"]).timestamp() == claims_of(cookie.value)["exp"]

        # The cookie alone signs the browser in: /ui/me, and any route the user may use.
        async with browser.get("/ui/me") as response:
            assert (response.status, await response.json()) == (200, user)
        async with browser.get("/users") as response:
            assert response.status == 200, await response.text()
        async with browser.post("/ui/token_refresh") as response:
            assert (response.status, await response.json()) == (200, {"message": "token refreshed"})
            assert _cookie_header(response)["auth_token"]["httponly"]

        async with browser.post("/ui/logout") as response:
            assert (response.status, await response.json()) == (200, {"message": "logout successful"})
        assert "auth_token" not in {c.key for c in browser.cookie_jar}
        async with browser.get("/ui/me") as response:
            assert response.status == 401
        async with browser.post("/ui/token_refresh") as response:
            assert response.status == 401
        async with browser.get("/users") as response:
            assert response.status == 401

        # Signing in again sets it again; the refresh reads the cookie only (a bearer token is not it).
        async with browser.post("/ui/login", json={"email": ADMIN, "password": "pw"}) as response:
            assert (response.status, await response.json()) == (200, user)
        async with browser.get("/ui/me") as response:
            assert response.status == 200
        token = (await login(client, ADMIN))["token"]
        assert_error(*await call(client, "POST", "/ui/token_refresh", headers=bearer(token)), 401, "no auth_token cookie")
        # The token of a user deleted since signs nobody in.
        assert (await call(client, "DELETE", f"/users/{user['id']}", headers=bearer(token)))[0] == 200
        async with browser.get("/ui/me") as response:
            assert response.status == 401


async def test_the_cookie_is_secure_when_configured(service_for, secured):
    async with service_for(secured.model_copy(update={"cookie_secure": True})) as client:
        async with client.post("/ui/register", json={"email": "jane@x.io", "password": "pw"}) as response:
            assert response.status == 201
            assert _cookie_header(response)["auth_token"]["secure"]


@pytest.mark.in_process(reason="moves the service's clock with freezegun")
# Sliding is the store's no business; and a clock moved by an hour keeps PostgreSQL's pool 10 s in shutting down.
@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_a_ui_token_close_to_its_expiry_slides(service_for, secured):
    start = time.time()
    with freeze_time(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)), tick=True) as clock:
        async with service_for(secured) as client, aiohttp.ClientSession(
            base_url=client.make_url("/"), cookie_jar=aiohttp.CookieJar(unsafe=True)
        ) as browser:
            async with browser.post("/ui/register", json={"email": "jane@x.io", "password": "pw"}) as response:
                first = _cookie_header(response)["auth_token"].value
            async with browser.get("/ui/me") as response:
                assert response.status == 200 and "Set-Cookie" not in response.headers  # an hour left: kept

            clock.tick(41 * 60)  # 19 minutes left
            async with browser.get("/ui/me", skip_auto_headers=["User-Agent"]) as response:
                assert response.status == 200 and "Set-Cookie" not in response.headers  # no User-Agent: no UI
            async with browser.get("/ui/me") as response:
                assert response.status == 200
                slid = _cookie_header(response)["auth_token"].value
            # issued 41 minutes (and a moment) later. Not to the second: freezegun starts its clock at the whole
            # second before it patched every loaded module, which takes a second or two on a busy machine, and
            # a clock read from a call stack freezegun ignores is the real one — a few seconds either way.
            assert claims_of(slid)["exp"] >= claims_of(first)["exp"] + 41 * 60 - 10
            assert claims_of(slid)["permissions"] == claims_of(first)["permissions"]

            clock.tick(20 * 60)  # the first token has expired; the jar holds the new one
            async with browser.get("/ui/me") as response:
                assert response.status == 200
            assert_error(*await call(client, "GET", "/ui/me", headers=bearer(first)), 401, "token is expired")


async def test_the_worker_account_is_seeded_and_signs_in(service_for, settings):
    worker = settings.model_copy(
        update={"worker_user_email": "worker@x.io", "worker_user_password": "w-pw", "worker_user_account_id": "worker-acct"}
    )
    async with service_for(worker) as client:
        answer = await login(client, "worker@x.io", "w-pw")
        assert (answer["user"]["id"], answer["user"]["friendlyName"]) == ("worker-acct", "Internal Worker Account")
        assert sorted((e["id"], e["resource"], e["resourceType"], e["permission"]) for e in claims_of(answer["token"])["permissions"]) == [
            ("worker-acct1", "server", "server", 3),
            ("worker-acct2", "files", "system", 1),
        ]
    seeded = len(log_events(worker))
    async with service_for(worker) as client:  # started again: nothing to seed
        await login(client, "worker@x.io", "w-pw")
    assert [e["event_type"] for e in log_events(worker)[seeded:]] == ["user.signed_in"]
