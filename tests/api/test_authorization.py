"""Security on: every route needs a valid JWT or the API key, but the public ones; and the permission it names.

Tokens are minted here with the service's secret (``infra.tokens``), carrying whatever entries a test
needs; the entries stored on the log (``/register``, ``/access-control``) come in where the check
looks them up: token-first precedence. The route sweep walks the app's own route table, so a route
added later is swept too — and one without a requirement fails ``tests/unit/test_authorization_check.py``.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from pathlib import Path

import jwt
import pytest

from chainloom.domain.identity import SERVER, Grant, Permission
from chainloom.infra.eventlog import EventLog
from chainloom.infra.settings import Settings
from chainloom.infra.tokens import Tokens
from chainloom.web.app import create_app
from chainloom.web.authz import ADMIN_ONLY, requirement_of
from tests.api.helpers import assert_error, call
from tests.conftest import POSTGRES_URL, make_settings, reset_postgres

SECRET = "a-test-secret-of-32-characters!!"
API_KEY = "service-key-for-tests"
NOT_AUTHORIZED = "is not authorized: authz: not authorized"
INVALID_GROUP = {"name": 5}  # refused (422) once the check let it through: nothing is written


def secured(store_kind: str, tmp_path: Path, **overrides) -> Settings:
    if store_kind == "postgres":
        reset_postgres(POSTGRES_URL)
    values = {"security_enabled": True, "jwt_secret": SECRET, "api_token": API_KEY, "reconciler": False}
    return make_settings(store_kind, tmp_path / "data", **(values | overrides))


def grant(resource: str, level: Permission, subject: str = "someone") -> Grant:
    now = "2025-01-01T00:00:00Z"
    return Grant(str(uuid.uuid4()), subject, resource, "system", level, now, now)


def token(*grants: Grant, subject: str | None = None, lifetime: float = 3600, clock=time.time) -> str:
    minted, _ = Tokens(SECRET.encode(), lifetime, clock).issue(subject or str(uuid.uuid4()), grants)
    return minted


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def status_of(client, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> int:
    """The status alone: the body is not read (a live stream answers 200 and goes on)."""
    kwargs = {"headers": headers} if body is None else {"headers": headers | {"Content-Type": "application/json"}, "data": body}
    async with client.request(method, path, **kwargs) as response:
        return response.status


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


# -- the sweep ---------------------------------------------------------------------------------


async def test_every_route_refuses_without_a_token_and_without_the_right_and_lets_the_api_key_in(tmp_path, service_for):
    settings = secured("sqlite", tmp_path)
    routes = sorted(
        {(r.method, r.resource.canonical) for r in create_app(settings).router.routes() if r.method != "HEAD" and r.resource}
    )
    no_right = bearer(token(grant(SERVER, Permission.NONE)))
    swept = 0
    async with service_for(settings) as client:
        for method, path in routes:
            requirement = requirement_of(method, path) or ADMIN_ONLY
            if not requirement.token:
                continue
            url = concrete(path)
            where = f"{method} {path}"
            if path == "/ingest":  # a webhook delivery without our credential goes on to its signature check
                assert await status_of(client, method, url, {}) not in (401, 403), where
            else:
                status, body = await call(client, method, url)
                assert_error(status, body, 401, "invalid token claims")
                # The same route under /api, in the older platform's form: 400 for a token problem (403 on /ui/me).
                api_status, api_body = await call(client, method, "/api" + url)
                assert api_status == (403 if path == "/ui/me" else 400), (where, api_status, api_body)
                assert isinstance(api_body["error"], str) and "invalid token claims" in api_body["error"], where
            if not requirement.service:  # a valid token is all it needs (what the handler then says is its own)
                status, body = await call(client, method, url, headers=no_right)
                assert status < 400 or "invalid token claims" not in body["error"]["message"], where
                continue
            status, body = await call(client, method, url, headers=no_right)
            assert_error(status, body, 403, f"service {requirement.service} {NOT_AUTHORIZED}")
            for key in ({"X-API-Key": API_KEY}, bearer(API_KEY)):
                body_or_none = b"{}" if method in ("POST", "PUT", "PATCH") else None
                assert await status_of(client, method, url, key, body=body_or_none) not in (401, 403), where
            swept += 1
        # And the public routes take no token at all.
        for method, path in [("GET", "/health"), ("GET", "/version"), ("GET", "/openapi.json"), ("GET", "/api/health")]:
            assert await status_of(client, method, path, {}) == 200, path
    assert swept > 90


# -- the permission matrix --------------------------------------------------------------------


@pytest.fixture
async def secured_client(tmp_path, service_for, store_kind):
    async with service_for(secured(store_kind, tmp_path)) as client:
        yield client


@pytest.mark.parametrize("resource", ["backendservice", "admin_panel", SERVER])
async def test_the_permission_matrix_on_the_service_its_group_and_server(secured_client, resource):
    """view reads (GET /groups), manage writes (POST /groups, refused after the check for its body)."""
    for level in Permission:
        headers = bearer(token(grant(resource, level)))
        status, _ = await call(secured_client, "GET", "/groups", headers=headers)
        assert status == (200 if level >= Permission.VIEW else 403), (resource, level)
        status, body = await call(secured_client, "POST", "/groups", INVALID_GROUP, headers=headers)
        assert status == (422 if level >= Permission.MANAGE else 403), (resource, level, body)
        status, _ = await call(secured_client, "POST", "/execute", {}, headers=headers)  # running a prompt: view
        assert (status == 403) is (level < Permission.VIEW), (resource, level, status)


async def test_an_entry_for_another_service_grants_nothing_here(secured_client):
    headers = bearer(token(grant("eventservice", Permission.MANAGE), grant("activityservice", Permission.MANAGE)))
    status, body = await call(secured_client, "GET", "/groups", headers=headers)
    assert_error(status, body, 403, "service backendservice is not authorized")
    assert (await call(secured_client, "GET", "/mappings", headers=headers))[0] == 200


async def test_the_admins_token_passes_every_service(secured_client):
    headers = bearer(token(grant(SERVER, Permission.MANAGE)))
    for method, path in [("GET", "/groups"), ("GET", "/mappings"), ("GET", "/functions"), ("GET", "/taskchains")]:
        assert (await call(secured_client, method, path, headers=headers))[0] == 200, path


# -- tokens that do not verify ---------------------------------------------------------------


def _tampered(value: str) -> str:
    head, payload, signature = value.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["permissions"][0]["permission"] = 3
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{signature}"


async def test_expired_tampered_foreign_and_garbage_tokens_are_401_and_400_under_api(secured_client):
    two_hours_ago = time.time() - 7200
    claims = {"sub": "u", "identity": "u", "iat": int(time.time()), "exp": int(time.time()) + 600, "permissions": []}
    cases = [
        (token(grant(SERVER, Permission.MANAGE), clock=lambda: two_hours_ago), "token is expired"),
        (_tampered(token(grant(SERVER, Permission.NONE))), "invalid token claims"),
        (jwt.encode(claims, "another-secret-of-32-characters!", algorithm="HS256"), "invalid token claims"),
        (jwt.encode(claims, None, algorithm="none"), "invalid token claims"),
        ("garbage", "token is malformed: token contains an invalid number of segments"),
    ]
    for value, fragment in cases:
        for headers in (bearer(value), {"X-API-Key": value}, {"Cookie": f"auth_token={value}"}):
            status, body = await call(secured_client, "GET", "/groups", headers=headers)
            assert_error(status, body, 401, fragment)
            status, body = await call(secured_client, "GET", "/api/groups", headers=headers)
            assert status == 400 and fragment in body["error"], body


# -- where the token comes from ------------------------------------------------------------------


async def test_a_token_is_taken_from_the_bearer_header_then_the_cookie(secured_client):
    good, bad = token(grant(SERVER, Permission.MANAGE)), "not.a.token"
    cases = [
        ({"Authorization": f"bearer {good}"}, 200),
        ({"Authorization": good}, 200),  # the reference takes a header without the scheme whole
        ({"Cookie": f"auth_token={good}"}, 200),
        ({"Authorization": f"Bearer {good}", "Cookie": f"auth_token={bad}"}, 200),
        ({"Authorization": f"Bearer {bad}", "Cookie": f"auth_token={good}"}, 401),  # a well-formed bearer wins
        ({"Authorization": "Basic dXNlcjpwdw==", "Cookie": f"auth_token={good}"}, 200),
        ({"X-API-Key": f"Bearer {good}"}, 200),
        ({"X-API-Key": API_KEY}, 200),
        ({"X-API-Key": API_KEY, "Authorization": f"Bearer {good}"}, 401),  # two that disagree: neither is taken
        ({"X-API-Key": good, "Authorization": f"Bearer {good}"}, 200),
        ({"X-API-Key": API_KEY, "Authorization": "Basic dXNlcjpwdw=="}, 200),  # not ours (a proxy's)
    ]
    for headers, expected in cases:
        assert (await call(secured_client, "GET", "/groups", headers=headers))[0] == expected, headers


async def test_the_caller_is_recorded_as_the_actor(tmp_path, service_for):
    settings = secured("sqlite", tmp_path)
    subject = str(uuid.uuid4())
    async with service_for(settings) as client:
        for name, headers in [("by-a-user", bearer(token(grant(SERVER, Permission.MANAGE), subject=subject))), ("by-the-key", {"X-API-Key": API_KEY})]:
            assert (await call(client, "POST", "/groups", {"name": name}, headers=headers))[0] == 201
    log = EventLog(settings.event_store_env())
    try:
        actors = {e["data"]["name"]: e["metadata"]["actor"] for e in log.read(0, 1000) if e["event_type"] == "group.created"}
    finally:
        log.close()
    assert actors["by-a-user"] == subject and actors["by-the-key"] == "api-key"


# -- sliding refresh ---------------------------------------------------------------------------


async def test_a_token_close_to_its_expiry_is_refreshed_as_a_cookie_for_ui_clients(secured_client):
    short = token(grant(SERVER, Permission.MANAGE), lifetime=600)
    async with secured_client.get("/groups", headers=bearer(short)) as response:
        assert response.status == 200
        cookie = response.cookies["auth_token"]
    assert cookie.value != short and cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert not cookie["secure"] and cookie["expires"].endswith("GMT")
    secured_client.session.cookie_jar.clear()
    # The fresh token is a token like any: good for an hour, with the same entries.
    fresh = jwt.decode(cookie.value, SECRET, algorithms=["HS256"])
    assert fresh["exp"] - time.time() > 3000 and fresh["permissions"][0]["permission"] == 3
    assert (await call(secured_client, "GET", "/groups", headers={"Cookie": f"auth_token={cookie.value}"}))[0] == 200
    async with secured_client.get("/groups", headers=bearer(short), skip_auto_headers=["User-Agent"]) as response:
        assert response.status == 200 and "auth_token" not in response.cookies  # not a UI client
    async with secured_client.get("/groups", headers=bearer(fresh_token := cookie.value)) as response:
        assert response.status == 200 and "auth_token" not in response.cookies, fresh_token  # far from its expiry
    secured_client.session.cookie_jar.clear()


# -- token-first precedence, with users and entries on the log ----------------------------------------


async def _register(client, email: str) -> dict:
    status, body = await call(client, "POST", "/register", {"email": email, "password": "a password"})
    assert status == 201, body
    return body


async def _login(client, email: str) -> str:
    status, body = await call(client, "POST", "/login", {"email": email, "password": "a password"})
    assert status == 200, body
    return body["token"]


async def test_a_grant_reaches_a_resource_the_token_speaks_of_only_after_a_new_sign_in(secured_client):
    admin = bearer((await _register(secured_client, "admin@admin.com"))["token"])
    user = await _register(secured_client, "bob@example.com")
    bobs = bearer(user["token"])  # server: none
    subject = user["user"]["subject"]
    assert (await call(secured_client, "GET", "/groups", headers=bobs))[0] == 403

    async def grant_stored(resource: str, level: str) -> None:
        entry = {"identity": subject, "resource": resource, "resourceType": "system", "permission": level}
        status, body = await call(secured_client, "POST", "/access-control", entry, headers=admin)
        assert status == 201, body

    # The token says nothing of backendservice: the stored entry is looked up, and counts at once.
    await grant_stored("backendservice", "view")
    assert (await call(secured_client, "GET", "/groups", headers=bobs))[0] == 200
    assert (await call(secured_client, "POST", "/groups", INVALID_GROUP, headers=bobs))[0] == 403
    # The token says server: none — final until bob signs in again.
    await grant_stored(SERVER, "manage")
    status, body = await call(secured_client, "POST", "/groups", INVALID_GROUP, headers=bobs)
    assert_error(status, body, 403, NOT_AUTHORIZED)
    bobs = bearer(await _login(secured_client, "bob@example.com"))
    assert (await call(secured_client, "POST", "/groups", INVALID_GROUP, headers=bobs))[0] == 422
