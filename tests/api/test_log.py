"""The log by position: ``GET /log`` (pages, filters, bounded scans, secrets as stored), ``GET /log/stream``
(catch-up then live under concurrent writers: every nid once, in order), their authorization, and
``chainloom log tail`` (``infra.log_reader``), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from chainloom.domain.eventsource.events import ExternalEvent
from chainloom.domain.identity import Grant, Permission
from chainloom.infra import log_reader
from chainloom.infra.bootstrap import open_resources
from chainloom.infra.cli import main
from chainloom.infra.log_reader import LogFilter, last_events, read_log
from chainloom.infra.tokens import Tokens
from tests.api.helpers import assert_error, call
from tests.api.test_event_stream_resume import Frames
from tests.conftest import make_settings

OPENAI_KEY = "sk-proj-Zq8vLmN3pRt6Yw1Xc4Bd7Fg0Hj2Kwxyz"


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"sse_keepalive": 0.2})


def external(event_type: str, source: str, aggregate: str, actor: str = "") -> dict:
    aggregate_type, aggregate_id = aggregate.split("/", 1)
    body = {"event_type": event_type, "event_source": source, "aggregate_type": aggregate_type, "version": 1}
    body |= {"aggregate_id": aggregate_id, "data": {"n": str(uuid.uuid4())}, "metadata": {"actor": actor} if actor else {}}
    return body


async def post(client, body: dict) -> dict:
    status, event = await call(client, "POST", "/events", body)
    assert status == 201, event
    return event


async def read_all(client, **params) -> tuple[list[dict], list[dict]]:
    """Every event ``GET /log`` gives from ``after`` on, following ``next`` to the head; and the pages."""
    events, pages, after = [], [], params.pop("after", 0)
    while True:
        status, page = await call(client, "GET", "/log", params={**params, "after": str(after)})
        assert status == 200, page
        pages.append(page)
        events.extend(page["events"])
        assert page["next"] <= page["head"]
        if page["next"] >= page["head"]:
            return events, pages
        assert page["next"] > after  # always progress, matches or not
        after = page["next"]


# -- GET /log -----------------------------------------------------------------------------------


async def test_the_log_pages_filters_resumes_past_non_matches_and_shows_secrets_as_stored(keyed_settings, service_for):
    async with service_for(keyed_settings.model_copy(update={"log_scan_limit": 4})) as client:
        status, _ = await call(client, "POST", "/providers/openai/configure", {"apiKey": OPENAI_KEY})
        assert status == 200
        placed = await post(client, external("order.placed", "shop", "order/o1", actor="alice"))
        cancelled = await post(client, external("order.cancelled", "shop", "order/o1"))
        nested = await post(client, external("order.placed", "shop", "order/a/b", actor="alice"))
        invoice = await post(client, external("invoice.sent", "billing", "invoice/i1", actor="bob"))

        everything, pages = await read_all(client, limit="3")
        nids = [event["nid"] for event in everything]
        assert nids == sorted(set(nids)) and all(len(page["events"]) <= 3 for page in pages)
        mine = [event for event in everything if event["event_source"] != "chainloom"]
        assert mine == [placed, cancelled, nested, invoice]  # as stored, with their nid
        status, whole = await call(client, "GET", "/log", params={"limit": "1000"})
        assert whole["events"] == everything and whole["next"] == whole["head"] == nids[-1]

        # Filters, each read resumed from where the last scan (4 events at most) stopped.
        for params, expected in [
            ({"type": "order."}, [placed, cancelled, nested]),
            ({"type": "order.placed", "actor": "alice"}, [placed, nested]),
            ({"aggregate": "order/a/b"}, [nested]),
            ({"aggregate": "order"}, [placed, cancelled, nested]),
            ({"source": "billing"}, [invoice]),
            ({"actor": "bob", "type": ""}, [invoice]),  # an empty value is no filter
        ]:
            found, _ = await read_all(client, **params)
            assert found == expected, params
        status, first = await call(client, "GET", "/log", params={"source": "billing"})
        assert first == {"events": [], "next": nids[3], "head": nids[-1]}  # nothing in 4 events: go on from there
        status, last = await call(client, "GET", "/log", params={"after": str(nids[-2]), "limit": "1"})
        assert last == {"events": [invoice], "next": invoice["nid"], "head": invoice["nid"]}

        # A sealed secret is shown as stored, the ciphertext /events shows too; never in clear.
        (configured,), pages = await read_all(client, aggregate="provider/openai")
        assert OPENAI_KEY not in json.dumps(pages) and OPENAI_KEY not in json.dumps(everything)
        assert configured["data"]["sealedKey"] and configured["data"]["sealedKey"] != OPENAI_KEY
        status, indexed = await call(client, "GET", "/events/type", params={"event_type": configured["event_type"]})
        assert indexed == [configured]

        for params, expected_status, fragment in [
            ({"after": "-1"}, 422, "invalid after"),
            ({"after": "x"}, 422, "invalid after"),
            ({"limit": "0"}, 422, "limit"),
            ({"limit": "1001"}, 400, "limit exceeds"),
            ({"aggregate": "/o1"}, 422, "invalid aggregate"),
            ({"aggregate": "order/"}, 422, "invalid aggregate"),
        ]:
            status, body = await call(client, "GET", "/log", params=params)
            assert_error(status, body, expected_status, fragment)


# -- GET /log/stream ----------------------------------------------------------------------------


async def open_log(client, **kwargs) -> Frames:
    response = await client.get("/log/stream", **kwargs)
    assert response.status == 200, await response.text()
    first = await asyncio.wait_for(response.content.readline(), 5)  # subscribed once this arrives
    assert first.decode().startswith(": connected to the log after position")
    return Frames(response)


async def test_the_log_stream_catches_up_then_follows_concurrent_writers_each_nid_once_in_order(client):
    before = [await post(client, external("w.before", "shop", f"order/b{i}")) for i in range(4)]
    resume_from = before[1]["nid"]

    async def writer(name: str) -> list[dict]:
        return [await post(client, external(f"w.{name}", "shop", f"order/{name}{i}")) for i in range(10)]

    writers = asyncio.gather(*(writer(name) for name in ("x", "y", "z")))
    await asyncio.sleep(0.02)
    # Opened while the writers write: the header wins over `after`.
    everything = await open_log(client, params={"after": "0"}, headers={"Last-Event-ID": str(resume_from)})
    written = await open_log(client, params={"after": str(resume_from), "type": "w."})
    await writers

    expected, _ = await read_all(client, after=resume_from)
    assert len({event["nid"] for event in expected}) == len(expected) >= 32
    assert await everything.events(len(expected)) == expected  # every nid once, in log order, as stored
    assert await written.events(32) == [event for event in expected if event["event_type"].startswith("w.")]
    live = await post(client, external("w.live", "shop", "order/live"))
    assert await written.events(1) == [live]
    everything.close()
    written.close()


# -- authorization -----------------------------------------------------------------------------


async def test_the_log_needs_view_on_auditservice_with_security_on(tmp_path, service_for):
    secret, api_key = "a-test-secret-of-32-characters!!", "service-key-for-tests"
    settings = make_settings("sqlite", tmp_path / "data", security_enabled=True, jwt_secret=secret, api_token=api_key)

    def bearer(resource: str, level: Permission) -> dict[str, str]:
        now = "2025-01-01T00:00:00Z"
        grant = Grant(str(uuid.uuid4()), "someone", resource, "system", level, now, now)
        minted, _ = Tokens(secret.encode(), 3600, time.time).issue(str(uuid.uuid4()), [grant])
        return {"Authorization": f"Bearer {minted}"}

    async def status_of(client, path: str, headers: dict[str, str]) -> int:
        async with client.get(path, headers=headers) as response:  # a stream's body is not read
            return response.status

    async with service_for(settings) as client:
        for path in ("/log", "/log/stream"):
            assert await status_of(client, path, bearer("auditservice", Permission.VIEW)) == 200, path  # an auditor
            assert await status_of(client, path, {"X-API-Key": api_key}) == 200, path  # the admin
            assert await status_of(client, path, bearer("auditservice", Permission.NONE)) == 403, path
            assert await status_of(client, path, {}) == 401, path
        status, body = await call(client, "GET", "/log", headers=bearer("eventservice", Permission.MANAGE))
        assert_error(status, body, 403, "service auditservice is not authorized")


# -- chainloom log tail, and read_log itself -----------------------------------------------------


def test_log_tail_prints_the_last_events_those_after_a_position_and_follows_until_interrupted(
    tmp_path, monkeypatch, capsys
):
    """On SQLite only: the command reads through ``read_log``, which the API tests run on both stores."""
    settings = make_settings("sqlite", tmp_path / "data")
    monkeypatch.setenv("CHAINLOOM_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CHAINLOOM_DATABASE_URL", settings.database_url)
    with open_resources(settings, read_store=False) as resources:
        log = resources.log

        def append(*events: tuple[str, str, str]) -> list[int]:
            stored = [
                log.mapper.to_stored_external(
                    ExternalEvent(str(uuid.uuid4()), time.time_ns(), kind, source, *aggregate.split("/"), version=1)
                )
                for kind, source, aggregate in events
            ]
            return log.insert(stored)

        def tail(*args: str) -> list[dict]:
            assert main(["log", "tail", *args]) == 0
            return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

        nids = append(*[("order.placed", "shop", f"order/o{i % 2}") for i in range(5)], ("invoice.sent", "billing", "invoice/i"))
        assert [e["nid"] for e in tail("-n", "3")] == nids[-3:]
        assert [e["nid"] for e in tail("-n", "2", "--type", "order.")] == nids[3:5]
        assert [e["nid"] for e in tail("--after", str(nids[0]), "--aggregate", "order/o0")] == [nids[2], nids[4]]
        assert read_log(log, 0, 10, LogFilter(source="billing"), scan_limit=2) == ([], nids[1])
        assert [e["nid"] for e in last_events(log, 2, LogFilter(source="shop"), until=nids[3])] == nids[2:4]

        pauses: list[float] = []

        def sleep(seconds: float) -> None:  # during the first pause two events come; the second is Ctrl-C
            pauses.append(seconds)
            if len(pauses) > 1:
                raise KeyboardInterrupt
            append(("order.placed", "shop", "order/f"), ("invoice.sent", "billing", "invoice/f"))

        monkeypatch.setattr(log_reader, "_sleep", sleep)
        (followed,) = tail("-f", "-n", "0", "--source", "shop")
        assert followed["aggregate_id"] == "f" and followed["nid"] == nids[-1] + 1

    assert main(["log", "tail", "--aggregate", "/x"]) == 2
    assert "invalid aggregate" in capsys.readouterr().err
