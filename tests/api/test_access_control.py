"""/access-control on SQLite and PostgreSQL: grant, read (with the user's details), list by identity or by
`from`, replace, revoke; the notes' validation order; the REF defects fixed (real ids, timestamps, details
per entry); and the entries' integrity with their users."""

from __future__ import annotations

from typing import Any

import pytest

from chainloom.infra.settings import Settings
from chainloom.infra.timefmt import parse_ns
from tests.api.helpers import assert_error, call
from tests.api.identity_helpers import identity_settings
from tests.integration.serve_process import log_events


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return identity_settings(settings)


async def _user(client, email: str, name: str = "") -> dict[str, Any]:
    status, user = await call(client, "POST", "/users", {"email": email, "password": "", "friendlyName": name})
    assert status == 201, user
    return user


def entry(identity: str, resource: str = "chatservice", permission: str = "view", **fields: Any) -> dict[str, Any]:
    return {"identity": identity, "resource": resource, "resourceType": "system", "permission": permission, **fields}


def _details(user: dict[str, Any]) -> dict[str, Any]:
    return {"id": user["id"], "friendlyName": user.get("friendlyName", ""), "email": user["email"], "subject": user["id"]}


async def test_an_entry_is_granted_read_replaced_and_revoked(client, settings):
    jane = await _user(client, "jane@x.io", "Jane")
    body = entry(jane["id"], permission="MANAGE", id="ignored", createdAt="2001-01-01T00:00:00Z")
    status, granted = await call(client, "POST", "/access-control", body)
    assert status == 201, granted
    entry_id = granted["id"]
    assert entry_id and entry_id != "ignored"
    assert {k: v for k, v in granted.items() if k not in ("createdAt", "updatedAt")} == {
        "id": entry_id, "identity": jane["id"], "resource": "chatservice", "resourceType": "system", "permission": "manage",
    }  # fmt: skip
    assert granted["createdAt"] == granted["updatedAt"] and not granted["createdAt"].startswith("2001")
    assert await call(client, "GET", f"/access-control/{entry_id}") == (200, granted)
    assert await call(client, "GET", f"/access-control/{entry_id}", params={"expand": "user"}) == (
        200,
        granted | {"identityDetails": _details(jane)},
    )

    # PUT replaces it whole; the path's id wins over the body's.
    status, replaced = await call(client, "PUT", f"/access-control/{entry_id}", entry(jane["id"], "files", "edit", id="other"))
    assert status == 200, replaced
    assert (replaced["id"], replaced["resource"], replaced["permission"]) == (entry_id, "files", "edit")
    assert replaced["createdAt"] == granted["createdAt"] and parse_ns(replaced["updatedAt"]) > parse_ns(granted["updatedAt"])

    assert await call(client, "DELETE", f"/access-control/{entry_id}") == (200, "access entry removed")
    for method, payload in (("GET", None), ("PUT", entry(jane["id"])), ("DELETE", None)):
        assert_error(*await call(client, method, f"/access-control/{entry_id}", payload), 404, "libdb: not found")

    kinds = [e["event_type"] for e in log_events(settings) if e["aggregate_type"] == "access"]
    assert kinds == ["access.granted", "access.changed", "access.revoked"]
    [granted_event] = [e for e in log_events(settings) if e["event_type"] == "access.granted"]
    assert granted_event["data"] == {"identity": jane["id"], "resource": "chatservice", "resourceType": "system", "permission": "manage"}


async def test_with_user_details_the_answer_names_the_user(client):
    jane = await _user(client, "jane@x.io", "Jane")
    status, granted = await call(client, "POST", "/access-control", entry(jane["id"], withUserDetails=True))
    assert status == 201
    assert granted["withUserDetails"] is True and granted["identityDetails"] == _details(jane)


async def test_entries_are_listed_by_identity_or_before_from_each_with_its_own_user(client):
    jane = await _user(client, "jane@x.io", "Jane")
    bob = await _user(client, "bob@x.io")
    granted = []
    for identity, resource in ((jane, "a"), (bob, "b"), (jane, "c")):
        status, answer = await call(client, "POST", "/access-control", entry(identity["id"], resource))
        assert status == 201
        granted.append(answer)
    newest_first = list(reversed(granted))

    assert await call(client, "GET", "/access-control") == (200, newest_first)
    assert await call(client, "GET", "/access-control", params={"from": granted[2]["createdAt"]}) == (200, newest_first[1:])
    # With an identity every entry of it is listed: `from` is ignored.
    jane_entries = [granted[2], granted[0]]
    assert await call(client, "GET", "/access-control", params={"identity": jane["id"], "from": granted[0]["createdAt"]}) == (
        200,
        jane_entries,
    )
    assert await call(client, "GET", "/access-control", params={"identity": "nobody"}) == (200, [])
    # Details by identity, not by position in the list (the reference's defect).
    status, expanded = await call(client, "GET", "/access-control", params={"expand": "user"})
    assert status == 200
    users = {jane["id"]: jane, bob["id"]: bob}
    assert expanded == [e | {"identityDetails": _details(users[e["identity"]])} for e in newest_first]
    assert_error(*await call(client, "GET", "/access-control", params={"from": "soon"}), 422, "invalid from")


@pytest.mark.parametrize(
    "fields, status, fragment",
    [
        # The notes' order: the permission first (422), then the resource type (400), then the identity (409).
        ({"identity": "nobody", "resourceType": "", "permission": "owner"}, 422, "invalid permission string"),
        ({"identity": "nobody", "resourceType": "", "permission": "view"}, 400, "serverops: missing parameter"),
        ({"identity": "nobody"}, 409, "libdb: foreign key violation"),
        ({"identity": ""}, 409, "libdb: foreign key violation"),
        ({"permission": 3}, 422, "permission"),
    ],
)
async def test_an_entry_that_cannot_be_granted_is_refused_in_the_notes_order(client, settings, fields, status, fragment):
    jane = await _user(client, "jane@x.io")
    assert_error(*await call(client, "POST", "/access-control", entry(jane["id"]) | fields), status, fragment)
    # Replacing an entry validates the same way; an unknown entry is 404 once the body is valid.
    status_ok, granted = await call(client, "POST", "/access-control", entry(jane["id"]))
    assert status_ok == 201
    assert_error(*await call(client, "PUT", f"/access-control/{granted['id']}", entry(jane["id"]) | fields), status, fragment)
    assert_error(*await call(client, "PUT", "/access-control/no-such-entry", entry(jane["id"])), 404, "libdb: not found")
    assert [e["event_type"] for e in log_events(settings) if e["aggregate_type"] == "access"] == ["access.granted"]


async def test_an_entry_moved_to_another_user_goes_with_that_user(client):
    jane = await _user(client, "jane@x.io")
    bob = await _user(client, "bob@x.io")
    status, granted = await call(client, "POST", "/access-control", entry(jane["id"]))
    assert status == 201
    status, moved = await call(client, "PUT", f"/access-control/{granted['id']}", entry(bob["id"]))
    assert status == 200 and moved["identity"] == bob["id"]
    # Jane's deletion leaves Bob's entry; Bob's takes it.
    assert (await call(client, "DELETE", f"/users/{jane['id']}"))[0] == 200
    assert (await call(client, "GET", f"/access-control/{granted['id']}"))[0] == 200
    assert (await call(client, "DELETE", f"/users/{bob['id']}"))[0] == 200
    assert_error(*await call(client, "GET", f"/access-control/{granted['id']}"), 404, "libdb: not found")
    assert await call(client, "GET", "/access-control") == (200, [])
