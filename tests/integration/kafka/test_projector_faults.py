"""The distributed mode under a poison event: the projector worker faults one projector, the API sees it.

The worker records the fault in the read store; the API (``CHAINLOOM_PROJECTIONS=kafka``) reads it with the
positions, so catalog commands answer 503 at once while event-source commands go on, and an operator's skip
from a third process brings the worker back without a restart.
"""

from __future__ import annotations

import pytest

from chainloom.infra.settings import Settings
from chainloom.projections import operator
from tests.integration.kafka.conftest import healthy, process_env, wait_until
from tests.integration.kafka.test_projector_worker import _request
from tests.integration.test_projection_faults import inject_poison


@pytest.mark.timeout(120)
def test_a_worker_faults_only_the_projector_a_poison_event_stops(kafka_settings: Settings, processes):
    kafka_settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker = processes("project", env=process_env(kafka_settings))
    api = processes("serve", env=process_env(kafka_settings, CHAINLOOM_PROJECTIONS="kafka", CHAINLOOM_PROJECTION_TIMEOUT="20"))

    def up() -> bool:
        api.assert_running()
        worker.assert_running()
        return healthy(api.port)

    wait_until(up, 60, "the API to start", interval=0.1)
    status, body = _request(api.port, "POST", "/backends", {"name": "before", "baseUrl": "http://b", "type": "ollama"})
    assert status == 201, body

    nid = inject_poison(kafka_settings)

    def degraded() -> bool:
        worker.assert_running()
        return bool(_request(api.port, "GET", "/health")[1])

    wait_until(degraded, 40, "the worker to fault the catalog projector", interval=0.1)
    status, report = _request(api.port, "GET", "/health")
    assert status == 200 and [f["projection"] for f in report["faulted"]] == ["catalog"]
    assert report["faulted"][0]["position"] == nid
    assert _request(api.port, "GET", "/ready")[0] == 503

    # At once with the reason, not after the 20 s timeout; event-source commands are unaffected.
    status, error = _request(api.port, "POST", "/backends", {"name": "during", "baseUrl": "http://d", "type": "ollama"})
    assert status == 503 and f"'catalog' is stopped at position {nid}" in error["error"]["message"], error
    status, appended = _request(api.port, "POST", "/events", {
        "event_type": "user.created", "event_source": "auth", "aggregate_type": "user", "aggregate_id": "u", "version": 1,
    })
    assert status == 201, appended

    operator.skip(kafka_settings, "catalog")
    wait_until(lambda: _request(api.port, "GET", "/ready")[0] == 200, 40, "the worker to go on after the skip")
    status, body = _request(api.port, "POST", "/backends", {"name": "after", "baseUrl": "http://a", "type": "ollama"})
    assert status == 201, body
    status, listed = _request(api.port, "GET", "/backends?limit=100")
    assert {"before", "during", "after"} <= {b["name"] for b in listed}
