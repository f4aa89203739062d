"""/users on SQLite and PostgreSQL: create with entries, read, list by `from`, update (a password too),
delete with the user's entries, the errors of the notes, and the events each change leaves on the log."""

from __future__ import annotations

from typing import Any

import pytest

from chainloom.infra.settings import Settings
from chainloom.infra.timefmt import parse_ns
from tests.api.helpers import assert_error, call
from tests.api.identity_helpers import identity_settings, login
from tests.integration.serve_process import log_events


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return identity_settings(settings)


def new_user(email: str = "jane@x.io", **fields: Any) -> dict[str, Any]:
    return {"email": email, "password": "pw", **fields}


def _without_times(user: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in user.items() if key not in ("createdAt", "updatedAt")}


async def test_a_user_is_created_read_listed_updated_and_deleted(client, settings):
    resources = [
        {"name": "chatservice", "permission": "View", "resourceType": "system"},
        {"name": "files", "permission": "edit", "resourceType": "system"},
    ]
    status, created = await call(client, "POST", "/users", new_user(friendlyName="Jane", allowedResources=resources))
    assert status == 201, created
    user_id = created["id"]
    assert _without_times(created) == {"id": user_id, "friendlyName": "Jane", "email": "jane@x.io", "subject": user_id}
    assert created["createdAt"] == created["updatedAt"]
    assert await call(client, "GET", f"/users/{user_id}") == (200, created)
    assert await call(client, "GET", "/users") == (200, [created])

    status, entries = await call(client, "GET", "/access-control", params={"identity": user_id})
    assert status == 200
    assert sorted((e["resource"], e["resourceType"], e["permission"]) for e in entries) == [
        ("chatservice", "system", "view"),
        ("files", "system", "edit"),
    ]

    # Only what is given changes; a new password is the one that signs in.
    status, renamed = await call(client, "PUT", f"/users/{user_id}", {"friendlyName": "Janet", "email": ""})
    assert status == 200, renamed
    assert (renamed["friendlyName"], renamed["email"], renamed["createdAt"]) == ("Janet", "jane@x.io", created["createdAt"])
    assert parse_ns(renamed["updatedAt"]) > parse_ns(created["updatedAt"])
    status, _ = await call(client, "PUT", f"/users/{user_id}", {"password": "new"})
    assert status == 200
    await login(client, "jane@x.io", "new")
    assert_error(*await call(client, "POST", "/login", {"email": "jane@x.io", "password": "pw"}), 401, "invalid credentials")

    assert await call(client, "DELETE", f"/users/{user_id}") == (200, "user removed")
    for method, body in (("GET", None), ("PUT", {"friendlyName": "x"}), ("DELETE", None)):
        assert_error(*await call(client, method, f"/users/{user_id}", body), 404, "libdb: not found")
    assert await call(client, "GET", "/users") == (200, [])
    assert await call(client, "GET", "/access-control", params={"identity": user_id}) == (200, [])
    assert_error(*await call(client, "POST", "/login", {"email": "jane@x.io", "password": "new"}), 401, "libdb: not found")

    identity_types = ("user", "access", "sign_in")
    changes = [(e["event_type"], e["aggregate_id"]) for e in log_events(settings) if e["aggregate_type"] in identity_types]
    entry_ids = [e["id"] for e in entries]
    assert [kind for kind, _ in changes] == [
        "user.registered", "user.access_attached", "user.access_attached", "access.granted", "access.granted",
        "user.updated", "user.updated",
        "user.signed_in", "user.sign_in_failed",
        "access.revoked", "access.revoked", "user.deleted",
        "sign_in.refused",
    ]  # fmt: skip
    assert {aggregate for kind, aggregate in changes if kind.startswith("access.")} == set(entry_ids)


async def test_a_friendly_name_left_empty_is_left_out(client):
    status, created = await call(client, "POST", "/users", new_user(allowedResources=[]))
    assert status == 201 and "friendlyName" not in created
    status, listed = await call(client, "GET", "/users")
    assert "friendlyName" not in listed[0]


async def test_emails_are_unique_in_any_case(client):
    status, jane = await call(client, "POST", "/users", new_user())
    assert status == 201
    assert_error(*await call(client, "POST", "/users", new_user("JANE@x.io")), 409, "unique constraint violation")
    status, bob = await call(client, "POST", "/users", new_user("bob@x.io"))
    assert_error(*await call(client, "PUT", f"/users/{bob['id']}", {"email": "Jane@X.io"}), 409, "unique constraint violation")
    # Her own e-mail in another case is hers to take.
    status, again = await call(client, "PUT", f"/users/{jane['id']}", {"email": "Jane@X.io"})
    assert status == 200 and again["email"] == "Jane@X.io"
    # Deleted, the e-mail is free.
    assert (await call(client, "DELETE", f"/users/{jane['id']}"))[0] == 200
    assert (await call(client, "POST", "/users", new_user("jane@x.io")))[0] == 201


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (new_user(allowedResources=[{"name": "x", "permission": "owner", "resourceType": "system"}]), 422, "invalid permission string"),
        (new_user(allowedResources=[{"name": "x", "permission": "view", "resourceType": ""}]), 400, "serverops: missing parameter"),
        (new_user(""), 422, "email is required"),
        ({"password": "pw"}, 422, "email is required"),
        (new_user(password=7), 422, "password"),
    ],
)
async def test_a_user_that_cannot_be_created_leaves_nothing(client, settings, body, status, fragment):
    assert_error(*await call(client, "POST", "/users", body), status, fragment)
    assert await call(client, "GET", "/users") == (200, [])
    assert not [e for e in log_events(settings) if e["aggregate_type"] in ("user", "access")]


async def test_users_are_listed_newest_first_before_from(client):
    created = []
    for name in ("a", "b", "c"):
        status, user = await call(client, "POST", "/users", new_user(f"{name}@x.io"))
        assert status == 201
        created.append(user)
    newest_first = list(reversed(created))
    assert await call(client, "GET", "/users") == (200, newest_first)
    assert await call(client, "GET", "/users", params={"from": created[2]["createdAt"]}) == (200, newest_first[1:])
    assert await call(client, "GET", "/users", params={"cursor": created[1]["createdAt"]}) == (200, newest_first[2:])
    assert await call(client, "GET", "/users", params={"limit": "1"}) == (200, newest_first[:1])
    assert await call(client, "GET", "/users", params={"from": "2001-01-01T00:00:00Z"}) == (200, [])
    assert_error(*await call(client, "GET", "/users", params={"from": "yesterday"}), 422, "invalid from")
    assert_error(*await call(client, "GET", "/users", params={"limit": "0"}), 422, "invalid limit")
