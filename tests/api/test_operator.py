"""An operator's status over HTTP: GET /projections, retry and skip of a real poison event, GET /relay.

The poison event is put into the log through the store (``tests/integration/test_projection_faults.py``): a
``group.created`` the catalog projector cannot apply. With a broker (``CHAINLOOM_TEST_KAFKA_BOOTSTRAP``) the
service relays the log to a topic of the test's own and ``/relay`` reports how far it got.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest

from chainloom.infra.follower import Follower
from chainloom.queries.operator import projection_names, public_error
from tests.api.helpers import assert_error, call
from tests.integration.test_projection_faults import inject_poison

KAFKA_BOOTSTRAP = os.environ.get("CHAINLOOM_TEST_KAFKA_BOOTSTRAP", "")
REQUIRE_KAFKA = os.environ.get("CHAINLOOM_TEST_REQUIRE_KAFKA") == "1"
API_KEY = "operator-test-key"


async def until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (result := await predicate()):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)
    return result


async def test_projection_status_retry_skip_and_relay(service_for, settings):
    if not KAFKA_BOOTSTRAP and REQUIRE_KAFKA:
        pytest.fail("CHAINLOOM_TEST_KAFKA_BOOTSTRAP is not set but the Kafka tests are required")
    kafka = {"kafka_bootstrap": KAFKA_BOOTSTRAP, "kafka_topic_prefix": f"op{uuid.uuid4().hex[:10]}."} if KAFKA_BOOTSTRAP else {}
    settings = settings.model_copy(update={"api_token": API_KEY, **kafka})
    key = {"X-API-Key": API_KEY}

    # The poison event's failures are logged as errors, as they should be: a served service (CHAINLOOM_TEST_WORKERS)
    # logs only what is critical, so that they do not count as the service's problems.
    async with service_for(settings, log_level="CRITICAL") as client:

        async def status() -> dict:
            code, body = await call(client, "GET", "/projections", headers=key)
            assert code == 200, body
            return body

        # Every projection, none faulted, none ahead of the head.
        body = await status()
        assert [p["name"] for p in body["projections"]] == list(projection_names())
        for projection in body["projections"]:
            assert set(projection) == {"name", "position", "head", "lag", "fault"}
            assert projection["fault"] is None and 0 <= projection["position"] <= projection["head"]
            assert projection["lag"] == projection["head"] - projection["position"]
        assert body["head"] > 0  # the seeds
        code, error = await call(client, "GET", "/projections")
        assert_error(code, error, 401)  # the API key guards it like every route

        # Nothing to retry or skip; no such projection.
        code, error = await call(client, "POST", "/projections/catalog/retry", headers=key)
        assert_error(code, error, 409, "not faulted")
        code, error = await call(client, "POST", "/projections/no-such/skip", headers=key)
        assert_error(code, error, 404, "no-such")

        nid = await asyncio.to_thread(inject_poison, settings)

        async def catalog_fault(after: str | None = None):
            catalog = {p["name"]: p for p in (await status())["projections"]}["catalog"]
            fault = catalog["fault"]
            return fault is not None and fault["failedAt"] != after and catalog

        catalog = await until(catalog_fault)
        fault = catalog["fault"]
        assert (fault["projection"], fault["position"], fault["eventType"]) == ("catalog", nid, "group.created")
        assert "purposeType" in fault["error"] and fault["eventId"]
        assert catalog["position"] < nid <= catalog["head"] and catalog["lag"] > 0
        others = [p for p in (await status())["projections"] if p["name"] != "catalog"]
        assert all(p["fault"] is None for p in others)

        # Retry without repairing anything: cleared at once, then the same event faults again.
        code, retried = await call(client, "POST", "/projections/catalog/retry", headers=key)
        assert code == 200, retried
        assert retried["name"] == "catalog" and retried["fault"] is None
        assert (await until(lambda: catalog_fault(fault["failedAt"])))["fault"]["position"] == nid

        # Skip: audited on the log with the caller as actor, the projection past the event, the catalog works.
        code, skipped = await call(client, "POST", "/projections/catalog/skip", headers=key)
        assert code == 200, skipped
        assert skipped["fault"] is None and skipped["position"] >= nid
        code, page = await call(client, "GET", "/log", headers=key, params={"type": "projection.event_skipped"})
        assert code == 200, page
        (audit,) = page["events"]
        assert audit["aggregate_id"] == f"catalog@{nid}" and audit["metadata"]["actor"] == "api-key"
        assert audit["data"]["skippedNid"] == nid and audit["data"]["projection"] == "catalog"
        code, error = await call(client, "POST", "/projections/catalog/skip", headers=key)
        assert_error(code, error, 409, "not faulted")
        code, created = await call(
            client, "POST", "/backends", {"name": "after-skip", "baseUrl": "http://x:1", "type": "ollama"}, headers=key
        )
        assert code == 201, created

        # The relay: off without Kafka; with it, published up to the head.
        code, relay = await call(client, "GET", "/relay", headers=key)
        assert code == 200, relay
        assert set(relay) == {"configured", "topic", "position", "head", "lag", "runsHere", "publishing", "lastError"}
        if not KAFKA_BOOTSTRAP:
            assert relay["configured"] is False and relay["position"] is None and relay["lag"] is None
            return
        assert relay["configured"] and relay["topic"] == f"{kafka['kafka_topic_prefix']}events" and relay["runsHere"]

        async def relayed():
            code, relay = await call(client, "GET", "/relay", headers=key)
            return relay["lag"] == 0 and relay["position"] == relay["head"] and relay

        relay = await until(relayed)
        assert relay["position"] >= audit["nid"] and relay["lastError"] is None


async def test_a_relay_step_failure_is_kept_until_a_step_succeeds():
    """The relay's follower keeps its latest failure for ``/relay`` (a broker away takes 30 s to fail for real)."""
    outcomes = [RuntimeError("cannot reach postgresql://relay:s3cret@db:5432/log"), (7, False)]

    def step():
        outcome = outcomes.pop(0) if outcomes else (7, False)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    follower = Follower(step, asyncio.to_thread, name="test-follower", idle_poll=0.01)
    follower.start()
    try:
        failure = await until(lambda: _async(follower.last_error))
        at, message = failure
        assert abs(at - time.time()) < 5 and message.startswith("RuntimeError: cannot reach")
        shown = public_error(message)
        assert "s3cret" not in shown and "postgresql://***@db:5432/log" in shown
        await follower.wait_for(7, 5.0)
        await until(lambda: _async(follower.last_error is None))
    finally:
        await follower.stop()


async def _async(value):
    return value
