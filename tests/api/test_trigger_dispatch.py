"""Trigger dispatch end to end, on SQLite and PostgreSQL: functions run on the events their triggers listen
for, what they emit and ``trigger.fired`` are on the log, and ``POST /events``, ``/ingest`` and ``/replay``
answer after them (spec §4.4–4.5; ``projections/dispatch.py``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.api.helpers import call, create_backend
from tests.api.test_execute import _grouped_ollama, _observed
from tests.api.test_ingest import GITHUB, HEADERS, PUSH
from tests.fakes.llm import FakeOllama

TRIGGERS = "X-Chainloom-Triggers"

AUDIT_USER = (
    "function audit_user(event) {"
    " var r = sendEvent('user.audited', {user: event.aggregateID, email: event.data.email});"
    " return {ok: r.success, id: r.event_id}; }"
)


@pytest.fixture
def settings(keyed_settings):
    """Small limits, so the limit tests are quick; a secrets key for the webhook mappings."""
    return keyed_settings.model_copy(
        update={"function_timeout": 1.0, "function_max_depth": 4, "sandbox_workers": 2, "reconcile_interval": 0.1}
    )


async def add_function(client, name: str, script: str) -> None:
    status, body = await call(client, "POST", "/functions", {"name": name, "scriptType": "goja", "script": script})
    assert status == 201, body


async def add_trigger(client, name: str, event_type: str, function: str, source: str = "") -> dict:
    listen: dict[str, str] = {"type": event_type} | ({"source": source} if source else {})
    status, body = await call(
        client, "POST", "/event-triggers", {"name": name, "listenFor": listen, "type": "function", "function": function}
    )
    assert status == 201, body
    return body


async def post_event(client, event_type: str, data: Any = None, **fields: Any) -> tuple[int, dict, str | None]:
    event = {
        "event_type": event_type,
        "event_source": "tests",
        "aggregate_type": "user",
        "aggregate_id": "u-1",
        "version": 1,
        "data": data if data is not None else {},
    } | fields
    async with client.post("/events", data=json.dumps(event), headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.json(), response.headers.get(TRIGGERS)


async def events_of_type(client, event_type: str) -> list[dict]:
    status, events = await call(client, "GET", "/events/type", params={"event_type": event_type, "limit": "1000"})
    assert status == 200, events
    return sorted(events, key=lambda e: e["nid"])


async def eventually(client, event_type: str, count: int, timeout: float = 15.0) -> list[dict]:
    """The events of a type once there are ``count`` of them (things the service does without being waited for)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        events = await events_of_type(client, event_type)
        if len(events) >= count or asyncio.get_running_loop().time() > deadline:
            return events
        await asyncio.sleep(0.05)


async def test_a_function_runs_on_its_event_and_is_recorded(client):
    await add_function(client, "audit_user", AUDIT_USER)
    await add_trigger(client, "on-user", "user.created", "audit_user")
    status, event, triggers = await post_event(client, "user.created", {"email": "a@example.com"})
    assert (status, triggers) == (201, "done"), event
    # what the script emitted is readable as soon as the request answered (the reference ran it inline)
    [audited] = await events_of_type(client, "user.audited")
    assert audited["data"] == {"user": "u-1", "email": "a@example.com"}
    assert audited["id"].startswith("func-gen-") and audited["event_source"] == "function_execution"
    assert (audited["aggregate_type"], audited["aggregate_id"], audited["version"]) == ("function", "function", 1)
    assert audited["metadata"]["source"] == "function_execution" and audited["metadata"]["trigger_depth"] == 1
    assert audited["metadata"]["caused_by"] == event["id"] and audited["nid"] > event["nid"]
    [fired] = await events_of_type(client, "trigger.fired")
    assert fired["event_source"] == "chainloom" and fired["aggregate_id"] == f"{event['nid']}/audit_user"
    data = fired["data"]
    assert {k: data[k] for k in ("trigger", "function", "eventId", "eventNid", "eventType", "outcome", "error")} == {
        "trigger": "on-user",
        "function": "audit_user",
        "eventId": event["id"],
        "eventNid": event["nid"],
        "eventType": "user.created",
        "outcome": "succeeded",
        "error": "",
    }
    assert data["result"] == {"ok": True, "id": audited["id"]} and data["emitted"] == [audited["id"]]
    assert data["durationMs"] >= 0 and fired["metadata"]["causation_id"] == event["id"]


async def test_an_event_nobody_listens_for_is_answered_without_waiting(client):
    await add_function(client, "audit_user", AUDIT_USER)
    await add_trigger(client, "on-user", "user.created", "audit_user")
    status, _, triggers = await post_event(client, "user.deleted")
    assert (status, triggers) == (201, None)
    assert await events_of_type(client, "trigger.fired") == []


async def test_one_run_per_function_and_event_however_many_triggers_name_it(client):
    await add_function(client, "count", "function count(event) { sendEvent('counted', {n: 1}); return null; }")
    await add_function(client, "other", "result = {other: true};")
    for name in ("t1", "t2", "t3"):
        await add_trigger(client, name, "tick", "count")
    await add_trigger(client, "t4", "tick", "other")
    assert (await post_event(client, "tick"))[2] == "done"
    assert len(await events_of_type(client, "counted")) == 1
    fired = await events_of_type(client, "trigger.fired")
    assert sorted((f["data"]["function"], f["data"]["trigger"]) for f in fired) == [("count", "t3"), ("other", "t4")]
    assert [f["data"]["result"] for f in fired if f["data"]["function"] == "other"] == [{"other": True}]


async def test_failures_are_recorded_and_never_fail_the_request(client):
    scripts = {
        "throws": "function throws(e) { throw new Error('boom'); }",
        "number": "function number(e) { return 42; }",
        "loops": "function loops(e) { while (true) {} }",
        "grows": "function grows(e) { var a = []; while (true) { a.push(new Array(100000).fill('x')); } }",
        "recurses": "function recurses(e) { return recurses(e) + 1; }",
        "broken": "function broken(e) { return {",
        "timers": "function timers(e) { setTimeout(function() {}, 1); return {}; }",
        "notcallable": "var notcallable = 5;",
    }
    for name, script in scripts.items():
        await add_function(client, name, script)
        await add_trigger(client, f"on-{name}", "bad", name)
    status, event, triggers = await post_event(client, "bad")
    assert (status, triggers) == (201, "done"), event
    fired = {f["data"]["function"]: f["data"] for f in await events_of_type(client, "trigger.fired")}
    assert set(fired) == set(scripts)
    assert all(f["outcome"] == "failed" and f["result"] is None for f in fired.values()), fired
    errors = {name: f["error"] for name, f in fired.items()}
    assert "boom" in errors["throws"]
    assert "object" in errors["number"]
    assert "timed out" in errors["loops"]
    assert "memory" in errors["grows"] or "died" in errors["grows"], errors["grows"]
    assert "stack overflow" in errors["recurses"]
    assert "SyntaxError" in errors["broken"]
    assert "setTimeout" in errors["timers"]
    assert "notcallable is not a function" in errors["notcallable"]
    # the sandbox is fine afterwards
    await add_function(client, "fine", "result = {fine: true};")
    await add_trigger(client, "on-fine", "good", "fine")
    assert (await post_event(client, "good"))[2] == "done"
    assert [f["data"]["outcome"] for f in await events_of_type(client, "trigger.fired") if f["data"]["function"] == "fine"] == [
        "succeeded"
    ]


async def test_nested_emission_stops_at_the_depth_limit(client, settings):
    await add_function(client, "echo", "function echo(e) { return sendEvent('ping', {n: (e.data.n || 0) + 1}); }")
    await add_trigger(client, "on-ping", "ping", "echo")
    status, _, triggers = await post_event(client, "ping", {"n": 0})
    assert (status, triggers) == (201, "done")
    limit = settings.function_max_depth
    pings = await events_of_type(client, "ping")
    assert [p["data"]["n"] for p in pings] == list(range(limit + 1))  # the first, then one per level
    fired = await events_of_type(client, "trigger.fired")
    outcomes = [(f["data"]["depth"], f["data"]["outcome"]) for f in fired]
    assert outcomes == [(d, "succeeded") for d in range(limit)] + [(limit, "refused")], outcomes
    assert "limit is 4" in fired[-1]["data"]["error"]


async def test_a_function_reacting_to_its_own_records_is_stopped_by_the_depth_limit(client, settings):
    await add_function(client, "watch", "function watch(e) { return {seen: e.data.function || null}; }")
    await add_trigger(client, "on-fired", "trigger.fired", "watch")
    await add_trigger(client, "on-go", "go", "watch")
    assert (await post_event(client, "go"))[2] == "done"
    fired = await events_of_type(client, "trigger.fired")
    assert len(fired) == settings.function_max_depth + 1 and fired[-1]["data"]["outcome"] == "refused"


async def test_a_webhook_reaches_a_function_through_its_mapping(client):
    status, _ = await call(client, "POST", "/mappings", GITHUB)
    assert status == 201
    await add_function(
        client,
        "on_push",
        "function on_push(event) { sendEvent('build.requested', {repo: event.aggregateID, commits: event.metadata.commit_ids});"
        " return {queued: true}; }",
    )
    await add_trigger(client, "builds", "push", "on_push", source="github.com")
    async with client.post("/ingest", params={"path": "/hooks/github"}, data=json.dumps(PUSH).encode(), headers=HEADERS) as response:
        assert response.status == 201 and response.headers.get(TRIGGERS) == "done", await response.text()
        answer = await response.json()
    [build] = await events_of_type(client, "build.requested")
    assert build["data"] == {"repo": "octo/hello", "commits": answer["metadata"]["commit_ids"]}
    # replaying the raw event appends the event again: the function runs again, after the replay answered
    async with client.post(
        "/replay", params={"nid": str(answer["raw_nid"]), "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}
    ) as response:
        assert response.status == 202 and response.headers.get(TRIGGERS) == "done"
    assert len(await events_of_type(client, "build.requested")) == 2


async def test_source_filters_and_triggers_created_later(client):
    await add_function(client, "mark", "result = {marked: true};")
    await post_event(client, "order.placed", aggregate_id="before")
    await add_trigger(client, "orders", "order.placed", "mark", source="shop")
    _, other, triggers = await post_event(client, "order.placed", event_source="elsewhere")
    assert triggers == "done"  # waited for (the type is listened for), but nothing ran for it
    _, shop, triggers = await post_event(client, "order.placed", event_source="shop")
    assert triggers == "done"
    fired = await events_of_type(client, "trigger.fired")
    assert [f["data"]["eventId"] for f in fired] == [shop["id"]]  # not the earlier event, not another source


async def test_internal_events_can_be_listened_for(client):
    await add_function(client, "seen", "function seen(e) { return {name: e.data.name, source: e.eventSource}; }")
    await add_trigger(client, "backends", "backend.created", "seen", source="chainloom")
    await create_backend(client, "ollama-7")
    [fired] = await eventually(client, "trigger.fired", 1)
    assert fired["data"]["result"] == {"name": "ollama-7", "source": "chainloom"}


async def test_a_deleted_function_no_longer_runs(client):
    await add_function(client, "audit_user", AUDIT_USER)
    await add_trigger(client, "on-user", "user.created", "audit_user")
    assert (await call(client, "DELETE", "/functions/audit_user"))[0] == 200
    assert (await post_event(client, "user.created"))[2] is None
    assert await events_of_type(client, "trigger.fired") == []


async def test_past_the_wait_the_answer_says_pending_and_the_function_still_runs(service_for, settings):
    async with service_for(settings.model_copy(update={"trigger_wait": 0.3, "function_timeout": 5.0})) as client:
        await add_function(client, "slow", "function slow(e) { var t = Date.now(); while (Date.now() - t < 1500) {} return {slept: true}; }")
        await add_trigger(client, "on-slow", "slow", "slow")
        status, _, triggers = await post_event(client, "slow")
        assert (status, triggers) == (201, "pending")
        [fired] = await eventually(client, "trigger.fired", 1)
        assert fired["data"]["result"] == {"slept": True}


async def test_host_functions_reach_the_task_engine(client, settings):
    async with FakeOllama() as ollama:
        ollama.add_model(settings.task_model)
        ollama.reply = "four"
        await _observed(client, await _grouped_ollama(client, ollama, "ollama-1"), settings.task_model)
        chain = {"id": "shout", "tasks": [{"id": "say", "handler": "raw_string", "prompt_template": "Answer {{.input}}",
                                          "transition": {"branches": [{"operator": "default", "goto": "end"}]}}]}
        assert (await call(client, "POST", "/taskchains", chain))[0] == 201
        await add_function(
            client,
            "ask",
            "function ask(e) {"
            " var t = executeTask('2+2?');"
            " var c = executeTaskChain('shout', {q: 1});"
            " var ok = callTaskChain('shout', {});"
            " var missing = callTaskChain('nope', {});"
            " return {task: t.response, taskOk: t.success, chain: c.result, steps: c.history.length, ok: ok.success,"
            "         missing: missing.success, why: missing.error}; }",
        )
        await add_trigger(client, "on-ask", "ask", "ask")
        assert (await post_event(client, "ask"))[2] == "done"
        [fired] = await events_of_type(client, "trigger.fired")
        assert fired["data"]["outcome"] == "succeeded", fired["data"]
        result = fired["data"]["result"]
        assert result["task"] == "four" and result["taskOk"] is True
        assert result["chain"] == "four" and result["steps"] >= 1 and result["ok"] is True
        assert result["missing"] is False and "not found" in result["why"]

