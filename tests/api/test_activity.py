"""/activity/* on SQLite and PostgreSQL (platform notes §12): what a request did, from the log and from the records
of reads and failures beside it; a chain run's steps as its request's state; alerts from a branch marked
``alert_on_match``; the retention bound; the activityservice permission.

A chain run is recorded on the log right after it answers, and another worker's reads within moments: those
are polled for."""

from __future__ import annotations

import asyncio
from typing import Any

from chainloom.domain.identity import Permission
from tests.api.helpers import assert_error, call
from tests.api.test_authorization import bearer, grant, secured, token
from tests.api.test_files import TEXT, form

ALERT = "a key-value input was parsed"
CHAIN = {
    "id": "watched",
    "tasks": [
        {
            "id": "parse",
            "handler": "parse_key_value",
            "transition": {"branches": [{"operator": "equals", "when": "parsed", "goto": "say", "alert_on_match": ALERT}]},
        },
        {"id": "say", "handler": "noop", "transition": {"branches": [{"operator": "default", "goto": "end"}]}},
    ],
}


async def _until(client: Any, path: str, check, **kwargs: Any) -> Any:
    body: Any = None
    for _ in range(100):
        status, body = await call(client, "GET", path, **kwargs)
        if status == 200 and check(body):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never showed what was wanted: {body}")


async def _upload(client: Any, request_id: str) -> dict:
    async with client.post("/files", data=form(TEXT), headers={"X-Request-ID": request_id}) as response:
        assert response.status == 201
        return await response.json()


def _ops(events: list[dict]) -> set[tuple[str, str]]:
    return {(e["operation"], e["subject"]) for e in events}


async def test_what_requests_did_their_chains_state_and_alerts(client):
    created = await _upload(client, "req-file")
    status, events = await call(client, "GET", "/activity/requests/req-file")
    assert status == 200 and ("create", "file") in _ops(events), events
    (file_event,) = [e for e in events if e["subject"] == "file"]
    assert file_event["entityID"] == created["id"] and file_event["requestID"] == "req-file"
    assert file_event["metadata"]["name"] == "a.txt" and "error" not in file_event
    assert file_event["start"] <= file_event["end"] and file_event["duration"] >= 0
    # A read and a failure are recorded beside the log (the failure with the message the client got).
    assert (await call(client, "GET", f"/files/{created['id']}", headers={"X-Request-ID": "req-read"}))[0] == 200
    status, missing = await call(client, "GET", "/files/no-such-file", headers={"X-Request-ID": "req-miss"})
    assert status == 404
    (read,) = await _until(client, "/activity/requests/req-read", lambda e: len(e) == 1)
    assert (read["operation"], read["subject"], read["entityID"]) == ("read", "file", created["id"]) and "error" not in read
    (miss,) = await _until(client, "/activity/requests/req-miss", lambda e: len(e) == 1)
    assert (miss["operation"], miss["error"]) == ("read", missing["error"]["message"])
    # A chain run: its steps are the request's state, and the marked branch it took raised an alert.
    status, answer = await call(client, "POST", "/tasks", {"input": "a=1", "inputType": "string", "chain": CHAIN},
                                headers={"X-Request-ID": "req-chain"})  # fmt: skip
    assert status == 200 and answer["state"][0]["alert"] == ALERT and "alert" not in answer["state"][1], answer
    state = await _until(client, "/activity/requests/req-chain/state", lambda s: len(s) == 2)
    assert [s["taskID"] for s in state] == ["parse", "say"] and state == answer["state"]
    (run,) = await _until(client, "/activity/requests/req-chain", lambda e: len(e) == 1 and "end" in e[0])
    assert (run["operation"], run["subject"], run["entityID"]) == ("run", "task_chain", answer["id"])
    assert run["metadata"]["chainId"] == "watched"
    assert (await call(client, "GET", "/activity/stateful-requests"))[1] == ["req-chain"]
    (alert,) = (await call(client, "GET", "/activity/alerts"))[1]
    assert set(alert) == {"id", "message", "requestID", "metadata", "Timestamp"}
    assert (alert["message"], alert["requestID"]) == (ALERT, "req-chain")
    assert alert["metadata"] == {"chainId": "watched", "runId": answer["id"], "taskId": "parse", "transition": "parsed"}
    assert (await call(client, "GET", "/activity/alerts", params={"limit": "0"}))[1] == [alert]  # limit+1, as REF
    # Operations, and the requests of one.
    status, operations = await call(client, "GET", "/activity/operations")
    assert {("create", "file"), ("read", "file"), ("run", "task_chain")} <= _ops(operations)
    assert (await call(client, "GET", "/activity/operations/create/file"))[1] == [{"id": "req-file"}]
    assert (await call(client, "GET", "/activity/operations/read/file"))[1] == [{"id": "req-miss"}, {"id": "req-read"}]
    requests = [r["id"] for r in (await call(client, "GET", "/activity/requests"))[1]]
    assert requests[:4] == ["req-chain", "req-miss", "req-read", "req-file"]
    assert (await call(client, "GET", "/activity/requests/nobody"))[1] == []
    assert (await call(client, "GET", "/activity/requests/nobody/state"))[1] == []
    logs = (await call(client, "GET", "/activity/logs", params={"limit": "2"}))[1]
    assert [e["requestID"] for e in logs] == ["req-chain", "req-miss"]
    # The marker is kept with a stored chain, and written only where it is set.
    status, stored = await call(client, "POST", "/taskchains", CHAIN)
    assert status == 201 and stored["tasks"][0]["transition"]["branches"][0]["alert_on_match"] == ALERT
    assert "alert_on_match" not in stored["tasks"][1]["transition"]["branches"][0]


async def test_retention_and_the_activityservice_permission(tmp_path, service_for, store_kind):
    settings = secured(store_kind, tmp_path, activity_retention=2)
    admin = {"X-API-Key": "service-key-for-tests"}
    viewer = bearer(token(grant("activityservice", Permission.VIEW)))
    async with service_for(settings) as client:
        for number in range(3):
            headers = {**admin, "X-Request-ID": f"req-{number}"}
            assert (await call(client, "POST", "/folders", {"name": f"f{number}"}, headers=headers))[0] == 201
        status, requests = await call(client, "GET", "/activity/operations/create/folder", headers=viewer)
        assert status == 200 and [r["id"] for r in requests] == ["req-2", "req-1"], requests  # the 2 newest rows
        status, body = await call(client, "GET", "/activity/requests", headers=bearer(token(grant("fileservice", Permission.MANAGE))))
        assert_error(status, body, 403, "service activityservice is not authorized")
        # The reads recorded beside the log are bounded too.
        for number in range(3):
            await call(client, "GET", "/files", headers={**admin, "X-Request-ID": f"list-{number}"})
        newest = [{"id": "list-2"}, {"id": "list-1"}]
        await _until(client, "/activity/operations/list/files", lambda r: r == newest, headers=viewer)
