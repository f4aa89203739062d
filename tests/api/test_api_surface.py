"""The /api surface: every route again under /api, with the older platform's conventions (platform.md §1).

There, errors are ``{"error": "<message>"}`` (plus a newline) with §1.5's statuses — token problems
400, "not authorized" 401, any refusal of an Authorize-kind route 403 — a GET of a path no route
serves is 404 with an empty body, another method 405 in plain text. The root keeps the contract's
nested envelope and plain statuses, for the very same requests.
"""

from __future__ import annotations

import json
import uuid

import pytest

from chainloom.domain.identity import SERVER, Grant, Permission
from chainloom.infra.tokens import Tokens
from tests.api.helpers import assert_error, call
from tests.conftest import make_settings

SECRET = "a-test-secret-of-32-characters!!"


async def raw(client, method: str, path: str, body=None, **kwargs) -> tuple[int, str, bytes, dict[str, str]]:
    """(status, content type, body bytes, headers) of an answer."""
    if body is not None:
        kwargs["data"] = body if isinstance(body, (bytes, str)) else json.dumps(body)
        kwargs.setdefault("headers", {}).setdefault("Content-Type", "application/json")
    async with client.request(method, path, **kwargs) as response:
        return response.status, response.content_type, await response.read(), dict(response.headers)


def flat(status: int, content_type: str, body: bytes, expected_status: int, fragment: str = "") -> str:
    """The answer is the flat error with the given status; its message."""
    assert status == expected_status, (status, body)
    assert content_type == "application/json" and body.endswith(b"\n"), body
    document = json.loads(body)
    assert set(document) == {"error"} and isinstance(document["error"], str), document
    assert fragment in document["error"], document["error"]
    return document["error"]


async def test_successes_are_the_roots(client):
    for path in ("/groups", "/version", "/health"):
        status, root = await call(client, "GET", path)
        api_status, api = await call(client, "GET", "/api" + path)
        assert api_status == status == 200
        if path != "/version":  # the version names the worker that answered
            assert api == root
    status, created = await call(client, "POST", "/api/groups", {"name": "via-api"})
    assert status == 201 and created["name"] == "via-api"
    status, found = await call(client, "GET", f"/api/groups/{created['id']}")
    assert status == 200 and found == created
    status, found = await call(client, "GET", "/group-by-name/via-api")
    assert status == 200 and found["id"] == created["id"]


async def test_errors_are_flat_under_api_and_nested_at_the_root(client):
    assert (await call(client, "POST", "/groups", {"name": "taken"}))[0] == 201
    cases = [
        ("GET", "/groups/no-such-group", None, 404),
        ("POST", "/groups", {"name": 5}, 422),
        ("POST", "/groups", {"name": "taken"}, 409),
        # Input refusals keep the root's status (the older platform said 400 for some: no client tells them apart).
        ("POST", "/groups", "{not json", 422),
        ("GET", "/events/type", None, 422),  # a required query value missing
    ]
    for method, path, body, expected in cases:
        status, nested = await call(client, method, path, body)
        assert_error(status, nested, expected)
        message = flat(*(await raw(client, method, "/api" + path, body))[:3], expected)
        assert message == nested["error"]["message"]


async def test_an_oversized_body_is_413_there_too(client):
    status, content_type, body, _ = await raw(client, "POST", "/api/groups", {"name": "x" * (2 * 1024 * 1024)})
    flat(status, content_type, body, 413)


async def test_unknown_paths_get_the_routers_answers(client):
    status, content_type, body, _ = await raw(client, "GET", "/api/nowhere")
    assert (status, body) == (404, b"")
    status, content_type, body, _ = await raw(client, "GET", "/api")
    assert (status, body) == (404, b"")
    status, content_type, body, _ = await raw(client, "POST", "/api/nowhere", {})
    assert (status, content_type) == (405, "text/plain")
    status, content_type, body, headers = await raw(client, "PATCH", "/api/groups")
    assert (status, content_type) == (405, "text/plain") and {"GET", "POST"} <= set(headers["Allow"].split(","))
    status, body = await call(client, "GET", "/nowhere")  # the root: the envelope, as ever
    assert_error(status, body, 404)
    status, content_type, body, _ = await raw(client, "GET", "/api/api/groups")
    assert (status, body) == (404, b"")


async def test_a_keyed_retry_under_api_is_answered_as_the_first_was(client):
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    first = await raw(client, "POST", "/api/groups", {"name": 5}, headers=dict(headers))
    again = await raw(client, "POST", "/api/groups", {"name": 5}, headers=dict(headers))
    flat(*first[:3], 422)
    flat(*again[:3], 422)
    assert again[3].get("Idempotent-Replayed") == "true" and again[2] == first[2]


async def test_the_api_key_refusals_are_token_problems_there(tmp_path, service_for):
    settings = make_settings("sqlite", tmp_path, api_token="s3cret-token")
    async with service_for(settings) as client:
        flat(*(await raw(client, "GET", "/api/groups"))[:3], 400, "missing API key")
        flat(*(await raw(client, "GET", "/api/groups", headers={"X-API-Key": "wrong"}))[:3], 400, "invalid API key")
        assert (await call(client, "GET", "/api/groups", headers={"X-API-Key": "s3cret-token"}))[0] == 200
        assert (await call(client, "GET", "/api/health"))[0] == 200  # public there too
        status, body = await call(client, "GET", "/groups")
        assert_error(status, body, 401, "missing API key")


@pytest.fixture
async def secured(tmp_path, service_for):
    settings = make_settings("sqlite", tmp_path, security_enabled=True, jwt_secret=SECRET, reconciler=False)
    async with service_for(settings) as client:
        yield client


def _token(level: Permission) -> str:
    now = "2025-01-01T00:00:00Z"
    subject = str(uuid.uuid4())
    grants = [Grant(str(uuid.uuid4()), subject, SERVER, "system", level, now, now)]
    return Tokens(SECRET.encode(), 3600).issue(subject, grants)[0]


async def test_with_security_token_problems_are_400_and_missing_rights_401(secured):
    flat(*(await raw(secured, "GET", "/api/groups"))[:3], 400, "invalid token claims")
    garbage = {"Authorization": "Bearer garbage"}
    flat(*(await raw(secured, "GET", "/api/groups", headers=garbage))[:3], 400, "token contains an invalid number of segments")
    none = {"Authorization": f"Bearer {_token(Permission.NONE)}"}
    flat(*(await raw(secured, "GET", "/api/groups", headers=none))[:3], 401, "service backendservice is not authorized")
    status, body = await call(secured, "GET", "/groups", headers=none)
    assert_error(status, body, 403, "service backendservice is not authorized")
    manage = {"Authorization": f"Bearer {_token(Permission.MANAGE)}"}
    assert (await call(secured, "GET", "/api/groups", headers=manage))[0] == 200
    # Public routes stay public there.
    assert (await call(secured, "GET", "/api/version"))[0] == 200


async def test_any_refusal_of_an_authorize_kind_route_is_403_there(secured):
    flat(*(await raw(secured, "GET", "/api/ui/me"))[:3], 403, "invalid token claims")
    for path, body in [
        ("/login", {"email": "nobody@example.com", "password": "x"}),
        ("/login", "{not json"),
        ("/token_refresh", {"token": "garbage"}),
        ("/ui/login", {"email": "nobody@example.com", "password": "x"}),
        ("/ui/token_refresh", {}),
    ]:
        status, nested = await call(secured, "POST", path, body)
        assert 400 <= status < 500 and status != 403, (path, status, nested)  # the root's plain statuses
        flat(*(await raw(secured, "POST", "/api" + path, body))[:3], 403)
    # Registration is not of that kind: a duplicate is 409 there as at the root.
    registration = {"email": "twice@example.com", "password": "a password"}
    assert (await call(secured, "POST", "/api/register", registration))[0] == 201
    flat(*(await raw(secured, "POST", "/api/register", registration))[:3], 409)
