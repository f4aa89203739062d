"""Point in time: read models rebuilt as they stood at a past position or time, served read-only; who changed what.

One scripted history on each store: step A by the API key, step B by a user; the answers at the end of
step A captured; then ``projections rebuild --until <a time between the steps> --into DIR`` and a
``--read-only`` service on DIR answer exactly the captured answers, refuse writes, and append nothing;
``audit who`` names each step's actor and request id.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra import cli
from chainloom.infra.audit import write_table
from chainloom.infra.eventlog import EventLog
from chainloom.infra.settings import Settings
from chainloom.infra.timefmt import format_ns
from chainloom.web.app import create_app
from tests.api.helpers import assert_error, call
from tests.api.identity_helpers import bearer, identity_settings, register

API_KEY = "an-api-key-for-the-audit-tests"
KEY = {"X-API-Key": API_KEY}
READS = ("/backends", "/groups", "/taskchains", "/files", "/models")


@pytest.fixture
def live(settings: Settings) -> Settings:
    """Security on (actors to tell apart), without the reconciler (it would append what it observes)."""
    return identity_settings(settings, security_enabled=True, api_token=API_KEY, reconciler=False)


@pytest.fixture
def command_line(live: Settings, monkeypatch: pytest.MonkeyPatch):
    """``chainloom …`` in this process, on the live store's settings (it reads them from the environment)."""
    monkeypatch.setenv("CHAINLOOM_DATA_DIR", str(live.data_dir))
    monkeypatch.setenv("CHAINLOOM_DATABASE_URL", live.database_url)

    def run(*argv: str) -> int:
        return cli.main(list(argv))

    return run


def step(name: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"X-Request-ID": name, **(headers or KEY)}


async def upload(client: TestClient, content: bytes, headers: dict[str, str]) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", content, filename="notes.txt", content_type="text/plain")
    async with client.post("/files", data=form, headers=headers) as response:
        assert response.status == 201, await response.text()
        return await response.json()


async def answers(client: TestClient, paths: tuple[str, ...]) -> dict[str, Any]:
    found = {}
    for path in paths:
        async with client.get(path, headers=KEY) as response:
            assert response.status == 200, (path, await response.text())
            found[path] = await response.read()
    return found


def head_of(settings: Settings) -> int:
    log = EventLog(settings.event_store_env())
    try:
        return log.head()
    finally:
        log.close()


async def test_a_copy_at_a_past_time_answers_as_the_service_did_then(live, command_line, tmp_path, capsys):
    async with TestClient(TestServer(create_app(live))) as client:
        user = await register(client, "admin@admin.com")  # manages the server
        as_user = bearer(user["token"])
        # Step A, by the API key (an external event first: a time is resolved by chainloom's own events).
        order = {"event_type": "order.placed", "event_source": "shop", "aggregate_type": "order", "aggregate_id": "o-1",
                 "version": 1, "metadata": {"actor": "clerk", "request_id": "r-9"}}  # fmt: skip
        assert (await call(client, "POST", "/events", order, headers=step("step-a")))[0] == 201
        _, backend = await call(client, "POST", "/backends", {"name": "b1", "baseUrl": "http://b1", "type": "ollama"}, headers=step("step-a"))
        _, group = await call(client, "POST", "/groups", {"name": "g1", "purposeType": "p"}, headers=step("step-a"))
        chain = {"id": "triage", "tasks": [{"id": "t", "handler": "raw_string", "prompt_template": "{{.input}}"}]}
        assert (await call(client, "POST", "/taskchains", chain, headers=step("step-a")))[0] == 201
        file = await upload(client, b"as it was", step("step-a"))
        paths = (*READS, f"/backends/{backend['id']}", f"/files/{file['id']}/download")
        then = await answers(client, paths)
        position_a = head_of(live)
        moment = format_ns(time.time_ns())
        # Step B, by the user: everything of step A changed.
        renamed = {"name": "b1-renamed", "baseUrl": "http://b1", "type": "ollama"}
        assert (await call(client, "PUT", f"/backends/{backend['id']}", renamed, headers=step("step-b", as_user)))[0] == 200
        assert (await call(client, "DELETE", f"/groups/{group['id']}", headers=step("step-b", as_user)))[0] == 200
        assert (await call(client, "DELETE", "/taskchains/triage", headers=step("step-b", as_user)))[0] == 200
        assert (await call(client, "DELETE", f"/files/{file['id']}", headers=step("step-b")))[0] == 200  # the key's file
        assert await answers(client, READS) != {path: then[path] for path in READS}

    into = tmp_path / "then"
    assert command_line("projections", "rebuild", "--until", moment, "--into", str(into)) == 0
    printed = capsys.readouterr()
    assert f"position {position_a}, the last event recorded by then" in printed.err
    assert f"read models built there at position {position_a}" in printed.out
    assert "file contents: 1 brought along" in printed.out

    copy = live.in_data_dir(into).model_copy(update={"read_only": True})
    async with TestClient(TestServer(create_app(copy))) as client:
        assert await answers(client, paths) == then
        assert (await call(client, "GET", "/ready"))[0] == 200
        status, body = await call(client, "POST", "/backends", {"name": "b2", "baseUrl": "http://b2", "type": "ollama"}, headers=dict(KEY))
        assert_error(status, body, 405, "read-only")
        async with client.delete(f"/groups/{group['id']}", headers=as_user) as response:  # a live token (shared secret)
            assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"
        async with client.post("/login", json={"email": "admin@admin.com", "password": "pw"}) as response:
            assert response.status == 405 and response.headers["Allow"] == ""  # signing in records a sign-in
        assert (await call(client, "POST", "/backends", {}))[0] == 401  # who asks is checked first
    assert head_of(copy) == position_a  # nothing appended (no seeding, no job)
    with closing(sqlite3.connect(into / "events.sqlite")) as database:  # the copy holds no password hash
        assert database.execute("SELECT count(*) FROM credentials").fetchone() == (0,)

    # Refusals, before anything is written: a used directory, a position past the head, --until alone.
    assert command_line("projections", "rebuild", "--until", str(position_a), "--into", str(into)) == 2
    assert command_line("projections", "rebuild", "--until", "999999", "--into", str(tmp_path / "past")) == 2
    assert command_line("projections", "rebuild", "--until", "1") == 2
    refusals = capsys.readouterr().err
    assert "already holds a store" in refusals and "past the log's head" in refusals and "needs --into" in refusals
    assert not (tmp_path / "past").exists()

    # Who changed the backend: step A's actor and request, then step B's.
    assert command_line("audit", "who", f"backend/{backend['id']}", "--json") == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(row["actor"], row["request_id"]) for row in rows] == [("api-key", "step-a"), (user["user"]["id"], "step-b")]
    assert rows[0]["nid"] < position_a < rows[1]["nid"] and rows[0]["event_type"].startswith("backend.")
    assert command_line("audit", "who", "order/o-1", "--json") == 0  # external: as its sender stated it
    assert [(row["actor"], row["request_id"]) for row in map(json.loads, capsys.readouterr().out.splitlines())] == [("clerk", "r-9")]
    table = io.StringIO()
    write_table(rows, table)  # what a terminal shows without --json
    lines = table.getvalue().splitlines()
    assert lines[0].split() == ["POSITION", "TIME", "EVENT", "ACTOR", "REQUEST"] and lines[2].split()[3:] == [user["user"]["id"], "step-b"]
