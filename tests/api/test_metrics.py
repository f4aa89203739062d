"""``GET /metrics`` through real HTTP on SQLite and PostgreSQL: what the service did, counted where it happened
and summed over its workers (with ``CHAINLOOM_TEST_WORKERS`` the requests spread over the workers of a real
``chainloom serve``, and each count must still be exact), and the shared state read at the scrape."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from chainloom.web.app import create_app
from chainloom.web.metrics import INSTRUMENTS, SCRAPE

from tests.conftest import make_settings
from tests.api.helpers import assert_error, call, create_backend, create_group
from tests.api.test_tasks import CHAIN, task
from tests.api.test_trigger_dispatch import add_function, add_trigger, post_event

FAILING = {"id": "f", "tasks": [task("boom", "raise_error")]}
JOB_TYPE = "vectorize_text/plain; charset=utf-8"
COUNT = "function count(event) { return {seen: event.eventType}; }"


DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


async def scrape(client, names: set[str] | None = None) -> dict[tuple[str, frozenset], float]:
    """Every sample of a scrape, by (name, labels); the names a query may use added to ``names``."""
    async with client.get("/metrics") as response:
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4"), response.headers
        text = await response.text()
    families = list(text_string_to_metric_families(text))
    if names is not None:
        names.update(f.name + suffix for f in families for suffix in ("", *_SUFFIXES.get(f.type, ())))
    return {(sample.name, frozenset(sample.labels.items())): sample.value for f in families for sample in f.samples}


def dashboard_metrics() -> set[str]:
    """The chainloom_* names the dashboard's queries use (it is valid JSON, with a Prometheus datasource variable)."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dashboard["templating"]["list"])
    panels = [p for row in dashboard["panels"] for p in [row, *row.get("panels", [])]]
    queries = [target["expr"] for panel in panels for target in panel.get("targets", [])]
    assert len(queries) >= 15, queries
    return {name for query in queries for name in re.findall(r"\bchainloom_[a-z_]+", query)}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_the_metrics_count_what_the_service_did_and_read_its_state(client):
    group = await create_group(client, "metered")
    for path in (f"/groups/{group['id']}", f"/groups/{group['id']}", f"/api/groups/{group['id']}"):
        assert (await call(client, "GET", path))[0] == 200
    assert (await call(client, "GET", "/no/such/thing/here"))[0] == 404
    backend = await create_backend(client, "never-seen", "http://user:secret@127.0.0.1:9")
    assert (await call(client, "POST", "/tasks", {"input": "a=1", "inputType": "string", "chain": CHAIN}))[0] == 200
    assert (await call(client, "POST", "/tasks", {"input": "x", "inputType": "string", "chain": FAILING}))[0] == 422
    await add_function(client, "count", COUNT)
    await add_trigger(client, "on-metered", "metered.happened", "count")
    for _ in range(2):  # answered once the trigger ran (POST /events waits for it)
        assert (await post_event(client, "metered.happened", {"n": 1}))[0] == 201
    form = aiohttp.FormData()
    form.add_field("file", b"some words to index", filename="a.txt", content_type="text/plain")
    async with client.post("/files", data=form) as response:
        assert response.status == 201, await response.text()

    exposed: set[str] = set()
    samples = await scrape(client, exposed)
    assert dashboard_metrics() <= exposed, dashboard_metrics() - exposed
    requests = "chainloom_http_request_duration_seconds_count"
    assert value(samples, requests, method="GET", route="/groups/{id}", status="200") == 3  # /api too, by its template
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    assert value(samples, requests, method="POST", route="/tasks", status="422") == 1
    slowest = value(samples, "chainloom_http_request_duration_seconds_bucket", method="GET", route="/groups/{id}", status="200", le="+Inf")
    assert slowest == 3
    assert not [key for key in samples if any(group["id"] in v or "secret" in v for _, v in key[1])], "raw values as labels"
    assert value(samples, "chainloom_events_appended_total", type="metered.happened", source="external") == 2
    assert value(samples, "chainloom_events_appended_total", type="group.created", source="internal") >= 1
    assert value(samples, "chainloom_events_appended_total", type="trigger.fired", source="internal") == 2
    assert value(samples, "chainloom_chain_runs_total", chain="kv", outcome="finished") == 1
    assert value(samples, "chainloom_chain_runs_total", chain="f", outcome="failed") == 1
    assert value(samples, "chainloom_chain_run_duration_seconds_count", chain="kv") == 1
    assert value(samples, "chainloom_trigger_executions_total", outcome="succeeded") == 2
    # shared state, as the store has it now
    head = value(samples, "chainloom_log_head")
    assert head and head >= 10
    catalog = value(samples, "chainloom_projection_position", projector="catalog")
    assert 0 < catalog <= head
    assert value(samples, "chainloom_projection_lag", projector="catalog") == head - catalog
    assert value(samples, "chainloom_projection_faulted", projector="catalog") == 0
    assert value(samples, "chainloom_backends", state="unobserved") >= 1
    assert value(samples, "chainloom_backend_up", backend=backend["name"]) == 0
    assert value(samples, "chainloom_jobs", type=JOB_TYPE, state="pending") == 1, [
        key for key in samples if key[0] == "chainloom_jobs"
    ]
    assert not [key for key, v in samples.items() if key[0] == "chainloom_metrics_read_failed" and v], samples
    # a lease taken: in progress, and how old the oldest lease is
    lease = {"leaserId": "w", "leaseDuration": "30s", "jobTypes": [JOB_TYPE]}
    assert (await call(client, "POST", "/leases", lease))[0] == 201
    await asyncio.sleep(0.05)
    samples = await scrape(client)
    assert value(samples, "chainloom_jobs", type=JOB_TYPE, state="in_progress") == 1
    assert value(samples, "chainloom_job_oldest_lease_age_seconds", type=JOB_TYPE) > 0


async def test_without_metrics_there_is_no_route_and_nothing_is_counted(tmp_path):
    """``CHAINLOOM_METRICS=false`` (on one store, in this process: the setting decides alike in workers)."""
    app = create_app(make_settings("sqlite", tmp_path / "data", metrics=False))
    async with TestClient(TestServer(app)) as unmetered:
        assert_error(*await call(unmetered, "GET", "/metrics"), 404)
        assert (await call(unmetered, "GET", "/groups"))[0] == 200
    assert INSTRUMENTS not in app and SCRAPE not in app



def test_labels_clients_choose_are_capped_and_types_read_without_decoding():
    """Event types clients state and chain ids they send are labels: the first LABELS_KEPT by name, then
    "other" (no series per value a client makes up); a domain event's type comes from its stream and topic."""
    from eventsourcing.persistence import StoredEvent

    from chainloom.infra.metrics import LABELS_KEPT, EventTypes, FirstSeen

    chains = FirstSeen(2)
    assert [chains.label(c) for c in ("a", "b", "c", "a")] == ["a", "b", "other", "a"]
    types = EventTypes()
    stated = [
        StoredEvent(f"event:{n}", 1, "chainloom.domain.eventsource.events:ExternalEvent",
                    f'{{"id":"x\\"event_type\\":\\"no","event_type":"t{n}","data":{{}}}}'.encode())
        for n in range(LABELS_KEPT + 1)
    ]  # fmt: skip
    assert [types.of(e) for e in stated[:2]] == [("t0", "external"), ("t1", "external")]
    assert [types.of(e) for e in stated][-1] == ("other", "external")
    domain = StoredEvent("group:1", 1, "chainloom.domain.groups:AffinityGroup.BackendAssigned", b"{}")
    assert types.of(domain) == ("group.backend_assigned", "internal")
