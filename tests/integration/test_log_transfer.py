"""``chainloom log export`` / ``log import`` and ``copy_log``: a log moved whole, SQLite → PostgreSQL → SQLite.

A migration keeps every public event, its position and its stored bytes; what lives beside the log comes
along (password hashes, dispatch position, blob content) and the index of unique values is rebuilt, so
the imported store serves the same read models, signs its users in and still refuses a taken name. An
import goes into an empty log only, and a refused one writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra import cli, seals
from chainloom.infra.dispatch_log import DispatchLog
from chainloom.infra.eventlog import EventLog
from chainloom.infra.log_transfer import TRIGGER_DISPATCH, copy_log, export_lines, import_lines
from chainloom.infra.settings import Settings
from chainloom.infra.timefmt import format_ns
from chainloom.web.app import create_app
from tests.api.helpers import call, create_backend, create_group, declare_model
from tests.api.identity_helpers import identity_settings, login
from tests.api.test_files import create as upload_file
from tests.conftest import POSTGRES_URL, make_settings, reset_postgres

READS = ("/backends", "/groups", "/models", "/files", "/taskchains")
BESIDE = ("unique_values", "credentials", "dispatch_positions", "log_seals")
EVER = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}


def transfer_settings(store_kind: str, data_dir: Path) -> Settings:
    return identity_settings(make_settings(store_kind, data_dir, reconciler=False))


def use(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    """The ``chainloom`` command (run in this process) on ``settings``' stores."""
    monkeypatch.setenv("CHAINLOOM_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CHAINLOOM_DATABASE_URL", settings.database_url)


def stored(settings: Settings) -> dict[str, Any]:
    """Every stored event (position, stream, version, topic, bytes) and the rows kept beside the log."""
    log = EventLog(settings.event_store_env())
    try:
        with log.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT {log.position_column} AS nid, originator_id, originator_version, topic, state"
                f" FROM {log.events_table} ORDER BY {log.position_column}"
            )
            snapshot: dict[str, Any] = {"events": [{**row, "state": bytes(row["state"])} for row in cursor.fetchall()]}
            for table in BESIDE:
                cursor.execute(f"SELECT * FROM {table} ORDER BY 1, 2")
                snapshot[table] = cursor.fetchall()
        snapshot["public"] = log.read(0, 100_000)
        return snapshot
    finally:
        log.close()


def verified(settings: Settings) -> seals.Report:
    log = EventLog(settings.event_store_env())
    try:
        report = seals.verify(log)
    finally:
        log.close()
    assert report.intact, report.broken
    return report


async def history(client: TestClient) -> dict[str, Any]:
    """Catalogue changes, a user with a password, an upload, external events of which one was erased."""
    backends = [await create_backend(client, f"b{i}") for i in range(3)]
    group = await create_group(client, "g", "p")
    await declare_model(client, "m0")
    await call(client, "POST", f"/backend-affinity/{group['id']}/backends/{backends[0]['id']}")
    await call(client, "PUT", f"/backends/{backends[1]['id']}", {"name": "renamed", "baseUrl": "http://r", "type": "vllm"})
    await call(client, "DELETE", f"/backends/{backends[2]['id']}")
    assert (await call(client, "POST", "/register", {"email": "jane@x.io", "password": "secret"}))[0] == 201
    uploaded = await upload_file(client, b"the content", "notes.txt")
    old = format_ns(time.time_ns() - 8 * 60 * 10**9)
    for aggregate_id, created_at in (("kept", old), ("gone", None)):
        body = {"event_type": "user.created", "event_source": "auth", "aggregate_type": "user",
                "aggregate_id": aggregate_id, "version": 7, "data": {"n": 1.5, "é": [None, True]}}  # fmt: skip
        assert (await call(client, "POST", "/events", body | ({"created_at": created_at} if created_at else {})))[0] == 201
    window = {"from": format_ns(time.time_ns() - 5 * 60 * 10**9), "to": format_ns(time.time_ns())}
    assert (await call(client, "DELETE", "/events/type", params={"event_type": "user.created"} | window))[0] == 200
    return uploaded


async def answers(client: TestClient) -> dict[str, Any]:
    read = {path: await call(client, "GET", path) for path in READS}
    read["events"] = await call(client, "GET", "/events/type", params={"event_type": "user.created"} | EVER)
    return read


@pytest.mark.postgres
def test_a_log_moves_to_postgresql_and_back_with_everything_beside_it(tmp_path, monkeypatch, capsysbinary):
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL (set CHAINLOOM_TEST_DATABASE_URL)")
    reset_postgres(POSTGRES_URL)
    source = transfer_settings("sqlite", tmp_path / "source")
    target = transfer_settings("postgres", tmp_path / "target")  # its blob directory: target/blobs

    async def on_source() -> tuple[dict[str, Any], dict[str, Any]]:
        async with TestClient(TestServer(create_app(source))) as client:
            uploaded = await history(client)
            return uploaded, await answers(client)

    uploaded, served = asyncio.run(on_source())
    before = stored(source)
    assert [e["nid"] for e in before["public"]] != list(range(1, len(before["public"]) + 1))  # a gap: erased

    # export --with-state | import, by the command
    use(monkeypatch, source)
    assert cli.main(["log", "export", "--with-state"]) == 0
    export = tmp_path / "export.jsonl"
    export.write_bytes(capsysbinary.readouterr().out)
    lines = export.read_text().splitlines()
    assert [json.loads(line) for line in lines[: len(before["public"])]] == before["public"]
    assert {json.loads(line)["beside"] for line in lines[len(before["public"]) :]} == {
        "credentials", "dispatch_positions", "log_seals", "blob"
    }  # fmt: skip
    use(monkeypatch, target)
    assert cli.main(["log", "import", str(export)]) == 0
    assert stored(target) == before  # same positions, streams, versions, topics, bytes; unique values; hashes
    assert any(seal["erased_by"] for seal in before["log_seals"])  # the erasure's tombstone came along …
    assert verified(target).tombstones == 1  # … and the copied chain verifies over the copied events

    async def on_target() -> None:
        async with TestClient(TestServer(create_app(target))) as client:
            assert await answers(client) == served
            await login(client, "jane@x.io", "secret")  # the hash came along
            status, _ = await call(client, "POST", "/register", {"email": "jane@x.io", "password": "x"})
            assert status == 409  # still unique
            status, _ = await call(client, "POST", "/backends", {"name": "renamed", "baseUrl": "http://x", "type": "vllm"})
            assert status == 409
            async with client.get(f"/files/{uploaded['id']}/download") as response:
                assert response.status == 200 and await response.read() == b"the content"
            appended = await create_backend(client, "after")  # PostgreSQL's sequence is past the imported positions
        log = EventLog(target.event_store_env())
        try:
            [event] = [e for e in log.read(before["public"][-1]["nid"], 100) if e["aggregate_id"] == appended["id"]]
        finally:
            log.close()

    asyncio.run(on_target())

    # … and back: PostgreSQL → SQLite, by the functions
    back = transfer_settings("sqlite", tmp_path / "back")
    back.data_dir.mkdir(parents=True)
    source_log, back_log = EventLog(target.event_store_env()), EventLog(back.event_store_env())
    try:
        until = before["public"][-1]["nid"]
        count = import_lines(back_log, export_lines(source_log, until=until, with_state=True))
        assert count == len(before["public"])
    finally:
        source_log.close()
        back_log.close()
    # The dispatch position as the target had it, clamped to the copy's end (the source's dispatcher may have
    # stopped short of its last event, which the target's then dispatched).
    # Seals likewise: the target's sealer may have sealed what the source's had not yet (to the same hashes).
    [dispatched] = stored(target)["dispatch_positions"]
    copied = stored(back)
    assert copied["log_seals"][: len(before["log_seals"])] == before["log_seals"]
    assert copied | {"log_seals": before["log_seals"]} == before | {
        "dispatch_positions": [{"name": "triggers", "position": min(dispatched["position"], until)}]
    }
    assert verified(back).tombstones == 1


@pytest.mark.parametrize("store_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_an_import_into_a_log_that_is_not_empty_or_of_a_broken_line_writes_nothing(settings, tmp_path, monkeypatch, capsys):
    good = [
        {"id": "e1", "created_at": "2026-01-02T03:04:05.5Z", "event_type": "order.placed", "event_source": "shop",
         "aggregate_type": "order", "aggregate_id": "o1", "version": 1, "data": {}, "metadata": {}, "nid": 3},
        {"id": "e2", "created_at": "2026-01-02T03:04:06Z", "event_type": "group.created", "event_source": "chainloom",
         "aggregate_type": "group", "aggregate_id": "g", "version": 1, "data": {"name": "g", "purposeType": "p"},
         "metadata": {}, "nid": 9},
    ]  # fmt: skip
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(json.dumps(e) for e in good) + '\n{"id": "e3", "nid": 10\n')
    use(monkeypatch, settings)
    assert cli.main(["log", "import", str(broken)]) == 2
    assert "line 3: not JSON" in capsys.readouterr().err
    log = EventLog(settings.event_store_env())
    try:
        assert log.head() == 0
        unknown = dict(good[1], event_type="group.exploded")
        with pytest.raises(Exception, match="line 2: no aggregate of type 'group' records 'group.exploded'"):
            import_lines(log, [json.dumps(good[0]), json.dumps(unknown)])
        assert log.head() == 0

        assert import_lines(log, [json.dumps(e) for e in good]) == 2
        assert log.read(0, 10) == good and log.head() == 9
        # A public export (no dispatch state): the history counts as dispatched, it never runs twice.
        assert DispatchLog(log).position(TRIGGER_DISPATCH) == 9
    finally:
        log.close()
    assert cli.main(["log", "import", str(broken)]) == 2
    assert "the log is not empty" in capsys.readouterr().err


def test_a_public_export_by_position_and_type_and_a_copy_up_to_a_position(tmp_path, monkeypatch, capsysbinary):
    source = transfer_settings("sqlite", tmp_path / "source")

    async def on_source() -> None:
        async with TestClient(TestServer(create_app(source))) as client:
            await create_backend(client, "b0")
            await create_group(client, "g1", "p")
            assert (await call(client, "POST", "/register", {"email": "jane@x.io", "password": "secret"}))[0] == 201

    asyncio.run(on_source())
    log = EventLog(source.event_store_env())
    try:
        events = log.read(0, 1000)
        head = log.head()
        use(monkeypatch, source)
        assert cli.main(["log", "export", "--after", "2", "--until", str(head - 1), "--type", "group.", "--type", "user."]) == 0
        exported = [json.loads(line) for line in capsysbinary.readouterr().out.decode().splitlines()]
        assert exported == [
            e for e in events if 2 < e["nid"] <= head - 1 and e["event_type"].startswith(("group.", "user."))
        ]
        assert "credentials" not in capsysbinary.readouterr().out.decode()

        # copy_log up to a position: the events up to it, the state beside them clamped to it
        DispatchLog(log).ensure(TRIGGER_DISPATCH)
        assert DispatchLog(log).move(TRIGGER_DISPATCH, DispatchLog(log).position(TRIGGER_DISPATCH), head)
        copy = transfer_settings("sqlite", tmp_path / "copy")
        copy.data_dir.mkdir(parents=True)
        target = EventLog(copy.event_store_env())
        try:
            assert copy_log(log, target, until=head - 2) == len([e for e in events if e["nid"] <= head - 2])
            assert target.read(0, 1000) == [e for e in events if e["nid"] <= head - 2]
            assert DispatchLog(target).position(TRIGGER_DISPATCH) == head - 2
            with target.transaction(commit=False) as cursor:
                cursor.execute("SELECT COUNT(*) AS n FROM credentials")
                assert cursor.fetchone() == {"n": 1}
        finally:
            target.close()
    finally:
        log.close()
