"""/event-triggers on SQLite and PostgreSQL: CRUD by name, the look-ups by event type and by function,
integrity with functions (409 for an unknown one, a function's delete takes its triggers), pagination,
the events on the log, POST /executor/sync, and the listeners the dispatcher reads."""

from __future__ import annotations

from typing import Any

import pytest

from chainloom.infra.eventlog import EventLog
from chainloom.infra.timefmt import parse_ns
from chainloom.queries.functions import Listener
from chainloom.web.keys import FUNCTION_QUERIES
from tests.api.helpers import assert_error, call


def function(name: str = "audit_user", script: str = "result = {ok: true}") -> dict[str, Any]:
    return {"name": name, "scriptType": "goja", "script": script}


def trigger(name: str = "on_user", function: str = "audit_user", listen_type: str = "user.created", **fields: Any) -> dict[str, Any]:
    return {"name": name, "description": "", "listenFor": {"type": listen_type}, "type": "function", "function": function, **fields}


def answered(body: dict[str, Any], source: str = "") -> dict[str, Any]:
    """What the API answers for ``body``, without the server's timestamps."""
    return {
        "name": body["name"],
        "description": body.get("description", ""),
        "listenFor": {"type": body["listenFor"]["type"], "source": source},
        "type": "function",
        "function": body["function"],
    }


def _without_times(answer: dict[str, Any]) -> dict[str, Any]:
    assert set(answer) == {"name", "description", "listenFor", "type", "function", "createdAt", "updatedAt"}, answer
    return {key: value for key, value in answer.items() if key not in ("createdAt", "updatedAt")}


async def _functions(client, *names: str) -> None:
    for name in names:
        status, body = await call(client, "POST", "/functions", function(name))
        assert status == 201, body


async def _triggers(client, *bodies: dict[str, Any]) -> list[dict[str, Any]]:
    created = []
    for body in bodies:
        status, answer = await call(client, "POST", "/event-triggers", body)
        assert status == 201, answer
        created.append(answer)
    return created


def _log(settings) -> list[dict[str, Any]]:
    log = EventLog(settings.event_store_env())
    try:
        return [e for e in log.read(0, 10_000) if e["aggregate_type"] in ("function", "event_trigger")]
    finally:
        log.close()


async def test_a_trigger_is_created_read_replaced_deleted_and_created_again(client, settings):
    await _functions(client, "audit_user", "notify")
    body = trigger(description="audit new users", createdAt="2001-01-01T00:00:00Z", Unknown=1)
    status, created = await call(client, "POST", "/event-triggers", body)
    assert status == 201, created
    assert _without_times(created) == answered(body)
    assert created["createdAt"] == created["updatedAt"]
    assert await call(client, "GET", "/event-triggers/on_user") == (200, created)
    assert await call(client, "GET", "/event-triggers") == (200, [created])

    # PUT: the path's name wins; listenFor, type, function and description are replaced (another function here).
    replacement = trigger("ignored", function="notify", listen_type="user.deleted")
    replacement["listenFor"]["source"] = "github"
    status, replaced = await call(client, "PUT", "/event-triggers/on_user", replacement)
    assert status == 200, replaced
    assert _without_times(replaced) == answered(replacement, source="github") | {"name": "on_user"}
    assert replaced["createdAt"] == created["createdAt"]
    assert parse_ns(replaced["updatedAt"]) > parse_ns(created["updatedAt"])
    assert await call(client, "GET", "/event-triggers/on_user") == (200, replaced)
    assert_error(*await call(client, "GET", "/event-triggers/ignored"), 404, "not found")
    assert await call(client, "GET", "/event-triggers/function/audit_user") == (200, [])
    assert await call(client, "GET", "/event-triggers/function/notify") == (200, [replaced])

    assert await call(client, "DELETE", "/event-triggers/on_user") == (200, "event trigger removed")
    for method, body in (("GET", None), ("DELETE", None), ("PUT", trigger())):
        assert_error(*await call(client, method, "/event-triggers/on_user", body), 404, "libdb: not found")
    assert await call(client, "GET", "/event-triggers") == (200, [])

    status, again = await call(client, "POST", "/event-triggers", trigger())
    assert status == 201 and _without_times(again) == answered(trigger())

    changes = [(e["event_type"], e["aggregate_id"]) for e in _log(settings)]
    assert changes == [
        ("function.created", "audit_user"),
        ("function.created", "notify"),
        ("event_trigger.created", "on_user"),
        ("function.trigger_attached", "audit_user"),
        ("event_trigger.updated", "on_user"),
        ("function.trigger_detached", "audit_user"),
        ("function.trigger_attached", "notify"),
        ("event_trigger.deleted", "on_user"),
        ("function.trigger_detached", "notify"),
        ("event_trigger.recreated", "on_user"),
        ("function.trigger_attached", "audit_user"),
    ]
    created_event = _log(settings)[2]
    assert created_event["data"] == {
        "description": "audit new users",
        "listenType": "user.created",
        "listenSource": "",
        "triggerType": "function",
        "function": "audit_user",
    }
    assert created_event["event_source"] == "chainloom"


async def test_a_trigger_must_run_a_function_that_exists_and_have_a_name_of_its_own(client):
    status, body = await call(client, "POST", "/event-triggers", trigger())
    assert_error(status, body, 409, "libdb: foreign key violation")
    assert await call(client, "GET", "/event-triggers") == (200, [])
    await _functions(client, "audit_user")
    await _triggers(client, trigger())
    for method, path, body in [
        ("POST", "/event-triggers", trigger(function="audit_user", listen_type="other")),  # name taken
        ("PUT", "/event-triggers/on_user", trigger(function="ghost")),  # unknown function
    ]:
        status, answer = await call(client, method, path, body)
        assert_error(status, answer, 409, "libdb: unique constraint violation" if method == "POST" else "libdb: foreign key violation")
    assert _without_times((await call(client, "GET", "/event-triggers/on_user"))[1]) == answered(trigger())


async def test_deleting_a_function_deletes_its_triggers(client, settings):
    await _functions(client, "audit_user", "other")
    await _triggers(client, trigger("t1"), trigger("t2", listen_type="user.deleted"))
    [kept] = await _triggers(client, trigger("t3", function="other"))
    assert await call(client, "DELETE", "/functions/audit_user") == (200, "function removed")
    for name in ("t1", "t2"):
        assert_error(*await call(client, "GET", f"/event-triggers/{name}"), 404, "not found")
    assert await call(client, "GET", "/event-triggers") == (200, [kept])
    assert await call(client, "GET", "/event-triggers/function/audit_user") == (200, [])
    assert await call(client, "GET", "/event-triggers/event-type/user.created") == (200, [kept])
    # Stored in one decision: the triggers' deletes, then the function's.
    assert [(e["event_type"], e["aggregate_id"]) for e in _log(settings)][-3:] == [
        ("event_trigger.deleted", "t1"),
        ("event_trigger.deleted", "t2"),
        ("function.deleted", "audit_user"),
    ]
    # Created again, the function has no triggers; their names are free.
    await _functions(client, "audit_user")
    assert await call(client, "GET", "/event-triggers/function/audit_user") == (200, [])
    await _triggers(client, trigger("t1"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"listenFor": {"type": "t"}, "type": "function", "function": "f"}, "invalid event trigger data: name is required"),
        ({"name": "", "type": "x"}, "invalid event trigger data: name is required"),
        ({"name": "n", "type": "x"}, "invalid event trigger data: listenFor.type is required"),
        ({"name": "n", "listenFor": None, "type": "function", "function": "f"}, "invalid event trigger data: listenFor.type is required"),
        ({"name": "n", "listenFor": {"source": "s"}, "type": "function", "function": "f"}, "listenFor.type is required"),
        ({"name": "n", "listenFor": {"type": "t"}, "function": ""}, "invalid event trigger data: type must be 'function'"),
        (trigger(type="Function"), "invalid event trigger data: type must be 'function'"),
        (trigger(function=""), "invalid event trigger data: function is required"),
        (trigger(listenFor="user.created"), "invalid value for 'listenFor'"),
        (trigger(listenFor={"type": 1}), "invalid value for 'listenFor.type'"),
        (trigger(listen_type="t" * 1025), "invalid event trigger data: listenFor.type is longer than 1024 bytes"),
        (trigger(name="n\u0000"), "invalid value for 'name': must not contain NUL characters"),
    ],
)
async def test_invalid_triggers_are_refused_in_the_references_order(client, body, message):
    await _functions(client, "audit_user")
    assert_error(*await call(client, "POST", "/event-triggers", body), 422, message)
    assert await call(client, "GET", "/event-triggers") == (200, [])


async def test_a_replacement_is_validated_before_it_is_looked_up(client):
    await _functions(client, "audit_user")
    await _triggers(client, trigger())
    for path in ("/event-triggers/on_user", "/event-triggers/ghost"):
        status, body = await call(client, "PUT", path, trigger(type="webhook"))
        assert_error(status, body, 422, "invalid event trigger data: type must be 'function'")
    status, body = await call(client, "PUT", "/event-triggers/ghost", trigger())
    assert_error(status, body, 404, "libdb: not found")


async def test_triggers_are_looked_up_by_event_type_and_by_function_newest_first(client):
    await _functions(client, "a", "b")
    first, second, third = await _triggers(
        client,
        trigger("first", function="a"),
        trigger("second", function="b"),
        trigger("third", function="a", listen_type="user.deleted"),
    )
    assert await call(client, "GET", "/event-triggers/event-type/user.created") == (200, [second, first])
    assert await call(client, "GET", "/event-triggers/event-type/User.Created") == (200, [])
    assert await call(client, "GET", "/event-triggers/event-type/user.*") == (200, [])
    assert await call(client, "GET", "/event-triggers/function/a") == (200, [third, first])
    assert await call(client, "GET", "/event-triggers/function/ghost") == (200, [])
    # Types and function names may hold '/' as it is; a trigger's name holds it escaped (the look-ups' paths).
    await _functions(client, "team/fn")
    [slashed] = await _triggers(client, trigger("event-type/x y", function="team/fn", listen_type="github/push"))
    assert await call(client, "GET", "/event-triggers/event-type/github/push") == (200, [slashed])
    assert await call(client, "GET", "/event-triggers/function/team/fn") == (200, [slashed])
    assert await call(client, "GET", "/event-triggers/event-type/x y") == (200, [])
    assert await call(client, "GET", "/event-triggers/event-type%2Fx%20y") == (200, slashed)
    status, moved = await call(client, "PUT", "/event-triggers/event-type%2Fx%20y", trigger(function="a", listen_type="x y"))
    assert status == 200 and moved["name"] == "event-type/x y"
    assert await call(client, "GET", "/event-triggers/event-type/x y") == (200, [moved])
    for method in ("PUT", "DELETE"):  # a look-up's path is no trigger's
        status, _ = await call(client, method, "/event-triggers/event-type/x y", trigger() if method == "PUT" else None)
        assert status == 405
    assert await call(client, "DELETE", "/event-triggers/event-type%2Fx%20y") == (200, "event trigger removed")


async def test_triggers_are_listed_newest_first_a_page_at_a_time(client):
    await _functions(client, "audit_user")
    a, b, c = await _triggers(client, trigger("a"), trigger("b"), trigger("c"))
    assert await call(client, "GET", "/event-triggers") == (200, [c, b, a])
    assert await call(client, "GET", "/event-triggers", params={"limit": "2"}) == (200, [c, b])
    assert await call(client, "GET", "/event-triggers", params={"limit": "2", "cursor": b["createdAt"]}) == (200, [a])
    assert await call(client, "GET", "/event-triggers", params={"cursor": a["createdAt"]}) == (200, [])
    for params, expected, fragment in [
        ({"limit": "0"}, 422, "limit must be positive"),
        ({"limit": "x"}, 422, "invalid limit format, expected integer"),
        ({"cursor": "y"}, 422, "invalid cursor format, expected RFC3339Nano"),
        ({"limit": "1001"}, 400, "limit exceeds maximum allowed value"),
    ]:
        assert_error(*await call(client, "GET", "/event-triggers", params=params), expected, fragment)


async def test_executor_sync_answers_sync_triggered(client):
    assert await call(client, "POST", "/executor/sync") == (200, "sync triggered")


@pytest.mark.in_process(reason="reads the dispatcher's listeners from the in-process service")
async def test_listeners_join_the_script_and_start_after_the_triggers_creation(client, settings):
    queries = client.server.app[FUNCTION_QUERIES]
    assert await queries.listeners(["user.created"]) == {}
    assert await queries.listened_types() == frozenset()
    await _functions(client, "audit_user", "notify")
    github = trigger("github", listen_type="push")
    github["listenFor"]["source"] = "github"
    older, newer, pushed = await _triggers(client, trigger("older"), trigger("newer", function="notify"), github)

    def created_nid(name: str, event_type: str = "event_trigger.created") -> int:
        [nid] = [e["nid"] for e in _log(settings) if (e["event_type"], e["aggregate_id"]) == (event_type, name)]
        return nid

    def listener(answer: dict[str, Any], nid: int) -> Listener:
        return Listener(
            answer["name"], answer["function"], "result = {ok: true}", answer["listenFor"]["source"], nid,
            parse_ns(answer["createdAt"]),
        )

    expected = {
        "user.created": [listener(newer, created_nid("newer")), listener(older, created_nid("older"))],
        "push": [listener(pushed, created_nid("github"))],
    }
    assert await queries.listeners(["user.created", "push", "unheard", "user.created"]) == expected
    assert await queries.listeners([]) == {}
    assert await queries.listened_types() == frozenset({"user.created", "push"})

    # An update keeps the position it fires from and reads the new script; a trigger created again starts anew.
    assert (await call(client, "PUT", "/functions/notify", function("notify", script="result = {}")))[0] == 200
    assert (await call(client, "PUT", "/event-triggers/newer", trigger("newer", function="notify", description="d")))[0] == 200
    [newer_listener, _] = (await queries.listeners(["user.created"]))["user.created"]
    assert (newer_listener.active_from, newer_listener.script) == (created_nid("newer"), "result = {}")
    await call(client, "DELETE", "/event-triggers/older")
    await _triggers(client, trigger("older"))
    [recreated, _] = (await queries.listeners(["user.created"]))["user.created"]
    assert (recreated.trigger, recreated.active_from) == ("older", created_nid("older", "event_trigger.recreated"))
    await call(client, "DELETE", "/functions/notify")
    assert await queries.listened_types() == frozenset({"user.created", "push"})
    await call(client, "DELETE", "/functions/audit_user")
    assert await queries.listened_types() == frozenset()
    assert await queries.listeners(["user.created", "push"]) == {}
