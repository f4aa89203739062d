"""The tamper-evident journal: the log's hash chain, ``audit verify``, ``GET /log/digest``, erasure's
tombstones and the chain on Kafka records (``infra/seals.py``, ``projections/sealer.py``).

The hashes are recomputed here from the definition alone (hashlib and ``json.dumps``), as an auditor or a
downstream consumer without chainloom would.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra import cli, seals
from chainloom.infra.eventlog import EventLog
from chainloom.infra.kafka_log import header
from chainloom.infra.settings import Settings
from chainloom.web.app import create_app
from tests.api.helpers import call, create_backend
from tests.integration.kafka.conftest import kafka_bootstrap, kafka_settings, read_topic, topic_prefix  # noqa: F401
from tests.integration.serve_process import log_events

ZERO = "0" * 64
EVER = {"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}


def chained(prev: str, event: dict) -> str:
    """The definition: sha256(previous hash as hex ‖ the public event with nid, keys sorted, compact, UTF-8)."""
    body = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(prev.encode() + body).hexdigest()


@pytest.mark.parametrize("event", [
    {"data": {"f": 0.1, "g": 1e-07, "h": 1e16, "i": -2.5e300, "j": 3.0}},
    {"data": {"big": 2**64, "neg": -(2**63) - 1, "edge": 2**63 - 1, "nineteen": 1234567890123456789}},
    {"data": {"big": [2**64 + 1], "float": 0.5}, "metadata": {"huge": 1e19, "neg": -2.0**70}},
    {"data": {"u64": 2**64 - 1, "i64": -(2**63), "zero": -0.0, "tiny": 5e-324}},
    {"data": {"nan": float("nan"), "inf": float("-inf")}},
    {"data": {"text": "ä\u2028\x7f\x1f\"\\/\n\t€𝄞", "ключ": ["é", {"\uffff": 1, "\U0001f600": 2, "a": None}]}},
    {"data": {"looks like a float": ":1.5,[2e3", "time": "12:30.5"}, "metadata": {"actor": "x"}},
    {"data": {"deep": [[[[{"z": True, "y": False}]]]]}},
])
def test_the_fast_canonical_form_is_the_definition(event):
    envelope = {"id": "e", "event_type": "t", "version": 1, **event}
    for state in (json.dumps(envelope, separators=(",", ":"), ensure_ascii=False),
                  json.dumps(envelope, indent=1, ensure_ascii=False)):  # a state written by hand, with spaces
        expected = json.dumps({**json.loads(state), "nid": 7}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert seals.canonical_stored(state.encode(), 7) == expected.encode()


async def sealed_to_head(client) -> dict:
    """GET /log/digest until the sealer has reached the head (it follows the log within its lag)."""
    deadline = time.monotonic() + 10
    while True:
        status, digest = await call(client, "GET", "/log/digest")
        assert status == 200, digest
        if digest["position"] == digest["head"] or time.monotonic() > deadline:
            assert digest["position"] == digest["head"], digest
            return digest
        await asyncio.sleep(0.02)


def audit_verify(monkeypatch, capsys, settings: Settings, *args: str) -> tuple[int, str]:
    """``chainloom audit verify`` in this process, on the test's store."""
    monkeypatch.setenv("CHAINLOOM_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CHAINLOOM_DATABASE_URL", settings.database_url)
    status = cli.main(["audit", "verify", *args])
    return status, capsys.readouterr().out


def tamper(settings: Settings, sql_sqlite: str, sql_postgres: str, params: tuple) -> None:
    """Change the log's table behind chainloom's back."""
    if settings.uses_postgres:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(sql_postgres, params)
        return
    log = EventLog(settings.event_store_env())
    try:
        with log.transaction() as cursor:
            cursor.execute(sql_sqlite, params)
    finally:
        log.close()


async def test_the_chain_verifies_keeps_erasures_as_tombstones_and_breaks_where_a_row_was_altered(
    service_for, settings, monkeypatch, capsys
):
    settings = settings.model_copy(update={"reconciler": False})  # nothing appends but the test
    async with service_for(settings) as client:
        backend = await create_backend(client, "sealed-1")
        for i in range(3):
            body = {"event_type": "user.created", "event_source": "auth", "aggregate_type": "user",
                    "aggregate_id": f"u{i}", "version": 1, "data": {"email": f"gone{i}@x", "score": 1.5}}
            assert (await call(client, "POST", "/events", body))[0] == 201

        # The digest is the chain over the public events, recomputed from its definition.
        first = await sealed_to_head(client)
        events = log_events(settings)
        expected = ZERO
        for event in events:
            expected = chained(expected, event)
        assert (first["position"], first["hash"]) == (events[-1]["nid"], expected)
        assert first["sealedAt"].endswith("Z")
        # It moves with appends.
        status, appended = await call(client, "POST", "/events", {"event_type": "user.deleted", "event_source": "auth",
                                      "aggregate_type": "user", "aggregate_id": "u0", "version": 2})
        moved = await sealed_to_head(client)
        assert moved["position"] == appended["nid"] and moved["hash"] == chained(expected, appended)

        # An erasure keeps the erased positions' seals as tombstones: the chain still verifies, and says so.
        status, _ = await call(client, "DELETE", "/events/type", params={"event_type": "user.created"} | EVER)
        assert status == 200
        erased = [e["nid"] for e in events if e["event_type"] == "user.created"]
        digest = await sealed_to_head(client)
    audit = log_events(settings)[-1]
    assert audit["event_type"] == "event_deletion.recorded"
    log = EventLog(settings.event_store_env())
    try:
        assert [(s.position, s.erased_by) for s in seals.tombstones(log)] == [(p, audit["nid"]) for p in erased]
    finally:
        log.close()

    status, out = audit_verify(monkeypatch, capsys, settings, "--digest", f"{digest['position']}:{digest['hash']}")
    assert status == 0, out
    assert f"verified {len(events) + 2 - len(erased)} events up to position {digest['position']}" in out
    assert f"erased: {len(erased)} positions kept as tombstones, by the erasures at positions {audit['nid']}" in out
    assert "chain intact" in out

    # A row's state altered in the database: the break is found at its position, and the recorded digest fails.
    position = next(e["nid"] for e in events if e["event_type"] == "backend.created" and e["aggregate_id"] == backend["id"])
    nid = "notification_id" if settings.uses_postgres else "rowid"
    forged = "convert_to(replace(convert_from(state, 'UTF8'), 'sealed-1', 'forged-1'), 'UTF8')"
    tamper(settings, f"UPDATE stored_events SET state = CAST(replace(CAST(state AS TEXT), 'sealed-1', 'forged-1') AS BLOB)"
           f" WHERE {nid} = ?", f"UPDATE stored_events SET state = {forged} WHERE {nid} = %s", (position,))
    status, out = audit_verify(monkeypatch, capsys, settings, "--digest", f"{digest['position']}:{digest['hash']}")
    assert status == 1
    assert f"chain BROKEN at position {position}: hash differs" in out

    # Put back, it verifies again; a sealed event deleted outside an erasure is a break too.
    restore = "convert_to(replace(convert_from(state, 'UTF8'), 'forged-1', 'sealed-1'), 'UTF8')"
    tamper(settings, f"UPDATE stored_events SET state = CAST(replace(CAST(state AS TEXT), 'forged-1', 'sealed-1') AS BLOB)"
           f" WHERE {nid} = ?", f"UPDATE stored_events SET state = {restore} WHERE {nid} = %s", (position,))
    assert audit_verify(monkeypatch, capsys, settings)[0] == 0
    removed = appended["nid"]
    tamper(settings, f"DELETE FROM stored_events WHERE {nid} = ?", f"DELETE FROM stored_events WHERE {nid} = %s", (removed,))
    status, out = audit_verify(monkeypatch, capsys, settings)
    assert status == 1
    assert f"chain BROKEN at position {removed}: a sealed event is missing, and no erasure left a tombstone" in out
    # An event without a seal below sealed ones (its seal removed, or the event slipped in later): a break there.
    tamper(settings, "DELETE FROM log_seals WHERE position = ?", "DELETE FROM log_seals WHERE position = %s", (position,))
    status, out = audit_verify(monkeypatch, capsys, settings)
    assert status == 1
    assert f"chain BROKEN at position {position}: unsealed gap" in out


@pytest.mark.parametrize("store_kind", ["postgres"], indirect=True)
async def test_kafka_records_carry_the_chain_a_consumer_can_check(kafka_settings: Settings):
    async with TestClient(TestServer(create_app(kafka_settings))) as client:
        await create_backend(client, "on-kafka")
        body = {"event_type": "order.placed", "event_source": "shop", "aggregate_type": "order", "aggregate_id": "o1",
                "version": 1, "data": {"total": 12.5, "note": "ü"}}
        assert (await call(client, "POST", "/events", body))[0] == 201
        digest = await sealed_to_head(client)
    expected = log_events(kafka_settings)
    records: list = []
    read_topic(kafka_settings.kafka_bootstrap, kafka_settings.kafka_events_topic,
               lambda got: len(got) >= len(expected), records=records)
    prev, hashes = ZERO, {}
    for record in records:  # as a consumer: each record's hash from its value, each chained to the one before
        assert header(record.headers, "chain_prev") == prev.encode()
        event = json.loads(record.value)
        prev = hashes[event["nid"]] = chained(prev, event)
        assert header(record.headers, "chain_hash") == prev.encode()
    assert hashes[digest["position"]] == digest["hash"]  # the topic agrees with the log's digest
