"""/functions on SQLite and PostgreSQL: CRUD by name, the reference's validation messages, pagination,
and the events each change leaves on the log."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from chainloom.infra.eventlog import EventLog
from chainloom.infra.timefmt import parse_ns
from tests.api.helpers import assert_error, call

SCRIPT = (
    'function audit_user(event) { var r = sendEvent("user.audited", {user: event.aggregateID});'
    " return {ok: r.success}; }"
)


def function(name: str = "audit_user", **fields: Any) -> dict[str, Any]:
    return {"name": name, "description": "audits users", "scriptType": "goja", "script": SCRIPT, **fields}


def answered(body: dict[str, Any]) -> dict[str, Any]:
    """What the API answers for ``body``, without the server's timestamps."""
    return {key: body[key] for key in ("name", "description", "scriptType", "script")}


def _without_times(answer: dict[str, Any]) -> dict[str, Any]:
    assert set(answer) == {"name", "description", "scriptType", "script", "createdAt", "updatedAt"}, answer
    return {key: value for key, value in answer.items() if key not in ("createdAt", "updatedAt")}


def _changes(settings, aggregate_type: str) -> list[dict[str, Any]]:
    log = EventLog(settings.event_store_env())
    try:
        return [e for e in log.read(0, 10_000) if e["aggregate_type"] == aggregate_type]
    finally:
        log.close()


async def test_a_function_is_created_read_replaced_deleted_and_created_again(client, settings):
    status, created = await call(client, "POST", "/functions", function(createdAt="2001-01-01T00:00:00Z", Unknown=1))
    assert status == 201, created
    assert _without_times(created) == answered(function())
    assert created["createdAt"] == created["updatedAt"] and created["createdAt"] != "2001-01-01T00:00:00Z"
    assert await call(client, "GET", "/functions/audit_user") == (200, created)
    assert await call(client, "GET", "/functions") == (200, [created])

    # PUT: the path's name wins, everything else is replaced; the answer is the stored function.
    replacement = function("ignored", description="", script="result = {done: true}")
    status, replaced = await call(client, "PUT", "/functions/audit_user", replacement)
    assert status == 200, replaced
    assert _without_times(replaced) == answered(replacement) | {"name": "audit_user"}
    assert replaced["createdAt"] == created["createdAt"]
    assert parse_ns(replaced["updatedAt"]) > parse_ns(created["updatedAt"])
    assert await call(client, "GET", "/functions/audit_user") == (200, replaced)
    assert_error(*await call(client, "GET", "/functions/ignored"), 404, "not found")

    assert await call(client, "DELETE", "/functions/audit_user") == (200, "function removed")
    for method, body in (("GET", None), ("DELETE", None), ("PUT", function())):
        assert_error(*await call(client, method, "/functions/audit_user", body), 404, "libdb: not found")
    assert await call(client, "GET", "/functions") == (200, [])

    status, again = await call(client, "POST", "/functions", function(description="back"))
    assert status == 201 and again["description"] == "back"
    assert parse_ns(again["createdAt"]) > parse_ns(created["createdAt"])

    changes = _changes(settings, "function")
    assert [e["event_type"] for e in changes] == [
        "function.created",
        "function.updated",
        "function.deleted",
        "function.recreated",
    ]
    assert {(e["aggregate_id"], e["event_source"]) for e in changes} == {("audit_user", "chainloom")}
    assert changes[0]["data"] == {"description": "audits users", "scriptType": "goja", "script": SCRIPT}


async def test_a_name_is_unique(client):
    assert (await call(client, "POST", "/functions", function()))[0] == 201
    status, body = await call(client, "POST", "/functions", function(script="result = null"))
    assert_error(status, body, 409, "libdb: unique constraint violation")
    assert (await call(client, "GET", "/functions/audit_user"))[1]["script"] == SCRIPT


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"scriptType": "goja", "script": "x"}, "invalid function data: name is required"),
        (function(name="", scriptType="js", script=""), "invalid function data: name is required"),
        (function(scriptType="js", script=""), "invalid function data: scriptType must be 'goja'"),
        ({"name": "f", "script": "x"}, "invalid function data: scriptType must be 'goja'"),
        (function(scriptType="Goja"), "invalid function data: scriptType must be 'goja'"),
        (function(script=""), "invalid function data: script is required"),
        (function(script=5), "invalid value for 'script'"),
        (function(description=None), "invalid value for 'description'"),
        (function(name="f" * 1025), "invalid function data: name is longer than 1024 bytes"),
        (function(script="a\u0000b"), "invalid value for 'script': must not contain NUL characters"),
        ([function()], "the request body must be a JSON object"),
    ],
)
async def test_invalid_functions_are_refused(client, body, message):
    assert_error(*await call(client, "POST", "/functions", body), 422, message)
    assert await call(client, "GET", "/functions") == (200, [])


async def test_a_replacement_is_validated_and_field_names_match_in_any_case(client):
    status, created = await call(client, "POST", "/functions", {"NAME": "f", "scripttype": "goja", "Script": "x"})
    assert status == 201 and _without_times(created) == {"name": "f", "description": "", "scriptType": "goja", "script": "x"}
    for body, message in [
        ({"scriptType": "js", "script": "x"}, "scriptType must be 'goja'"),
        ({"scriptType": "goja"}, "script is required"),
    ]:
        assert_error(*await call(client, "PUT", "/functions/f", body), 422, message)
    assert (await call(client, "PUT", "/functions/f", {"scriptType": "goja", "script": "y"}))[1]["script"] == "y"


async def test_names_are_used_as_they_are_in_paths(client):
    for name in ("team/audit user", "a+b:c@d", "ünïcode"):
        status, created = await call(client, "POST", "/functions", function(name))
        assert status == 201 and created["name"] == name
        path = "/functions/" + quote(name, safe="/")
        assert await call(client, "GET", path) == (200, created)
        assert (await call(client, "PUT", path, function(description="changed")))[1]["description"] == "changed"
        assert await call(client, "DELETE", path) == (200, "function removed")


async def test_functions_are_listed_newest_first_a_page_at_a_time(client):
    created = []
    for name in ("a", "b", "c"):
        status, body = await call(client, "POST", "/functions", function(name))
        created.append(body)
    a, b, c = created
    await call(client, "PUT", "/functions/a", function(description="updated"))  # keeps its place
    assert [f["name"] for f in (await call(client, "GET", "/functions"))[1]] == ["c", "b", "a"]
    assert await call(client, "GET", "/functions", params={"limit": "2"}) == (200, [c, b])
    status, rest = await call(client, "GET", "/functions", params={"limit": "2", "cursor": b["createdAt"]})
    assert [(f["name"], f["description"]) for f in rest] == [("a", "updated")]
    assert await call(client, "GET", "/functions", params={"cursor": a["createdAt"]}) == (200, [])
    for params, expected, fragment in [
        ({"limit": "0"}, 422, "limit must be positive"),
        ({"limit": "-1"}, 422, "limit must be positive"),
        ({"limit": "ten"}, 422, "invalid limit format, expected integer"),
        ({"cursor": "yesterday"}, 422, "invalid cursor format, expected RFC3339Nano"),
        ({"limit": "1001"}, 400, "limit exceeds maximum allowed value"),
    ]:
        assert_error(*await call(client, "GET", "/functions", params=params), expected, fragment)
    assert len((await call(client, "GET", "/functions", params={"limit": "1000"}))[1]) == 3
