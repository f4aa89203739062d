"""The distributed mode's processes start in any order: none exits because a peer is late, all converge.

PostgreSQL and the real broker; the API (``chainloom serve`` with ``CHAINLOOM_PROJECTIONS=kafka`` and the
relay left to ``chainloom relay``), the relay and a projector worker are processes of their own, started
in each order an operator (systemd, Kubernetes without ordering) may start them.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from chainloom.domain.groups import INTERNAL_GROUPS
from chainloom.infra.settings import Settings
from tests.integration.kafka.conftest import Process, healthy, process_env, wait_until
from tests.integration.serve_process import log_events

POSTGRES_ONLY = pytest.mark.parametrize("store_kind", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
INTERNAL_NAMES = sorted(group.name for group in INTERNAL_GROUPS)


def http(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    """(status, decoded JSON body, headers) of one request on a new connection."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None, dict(response.headers)
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None, dict(error.headers)


def service_unavailable(answer: tuple[int, Any, dict[str, str]], *fragments: str) -> str:
    """The answer is the error envelope's 503 with ``Retry-After``; its message, which names every fragment."""
    status, body, headers = answer
    assert status == 503, answer
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["code"] == "service_unavailable" and error["type"] == "api_error", error
    assert headers.get("Retry-After") == "1", headers
    for fragment in fragments:
        assert fragment in error["message"], error["message"]
    return error["message"]


def ready_message(api: Process) -> str:
    """The message of the API's not-ready answer (it must still be not ready, and running)."""
    api.assert_running()
    assert api.port is not None
    return service_unavailable(http(api.port, "GET", "/ready"), "not ready")


def ready(port: int) -> bool:
    try:
        return http(port, "GET", "/ready")[0] == 200
    except OSError:  # not listening yet
        return False


def group_names(port: int) -> list[str]:
    status, groups, _ = http(port, "GET", "/groups")
    assert status == 200, groups
    return sorted(group["name"] for group in groups)


def peer_env(settings: Settings, **extra: str) -> dict[str, str]:
    """A relay's or a projector worker's environment; few connections each (many processes share the server)."""
    return process_env(settings, **({"CHAINLOOM_POSTGRES_POOL_SIZE": "2"} | extra))


def api_env(settings: Settings, **extra: str) -> dict[str, str]:
    defaults = {
        "CHAINLOOM_POSTGRES_POOL_SIZE": "2",
        "CHAINLOOM_PROJECTIONS": "kafka",
        "CHAINLOOM_KAFKA_RELAY_IN_SERVE": "false",
        "CHAINLOOM_WORKERS": "1",
        "CHAINLOOM_PROJECTION_TIMEOUT": "3",
        "CHAINLOOM_API_TOKEN": "",
    }
    return process_env(settings, **(defaults | extra))


def until_ready(port: int, *running: Process, timeout: float = 90) -> None:
    def check() -> bool:
        for process in running:
            process.assert_running()
        return ready(port)

    wait_until(check, timeout, f"the API on {port} to be ready", interval=0.2)


def writes_succeed(port: int, name: str) -> None:
    status, created, _ = http(port, "POST", "/backends", {"name": name, "baseUrl": f"http://{name}", "type": "ollama"})
    assert status == 201, created
    status, got, _ = http(port, "GET", f"/backends/{created['id']}")  # read-your-writes through the workers
    assert status == 200 and got["name"] == name, got


def seeded_once(settings: Settings) -> None:
    """Every process seeded at start-up; the log has each internal group created once."""
    created = [e for e in log_events(settings) if e["event_type"] == "group.created"]
    assert sorted(e["data"]["name"] for e in created) == INTERNAL_NAMES, created


@POSTGRES_ONLY
@pytest.mark.timeout(240)
def test_api_first_serves_reads_is_not_ready_and_refuses_writes_clearly_until_relay_and_worker_run(
    kafka_settings: Settings, processes: Callable[..., Process]
):
    api = processes("serve", env=api_env(kafka_settings))
    wait_until(lambda: api.assert_running() or healthy(api.port), 60, "the API to answer /health", interval=0.1)

    # Reads are served (nothing is projected yet: not even the seeded groups).
    assert group_names(api.port) == []
    assert http(api.port, "GET", "/backends")[:2] == (200, [])
    # Not ready, naming what it waits for (once it has looked): nothing has published the log to Kafka.
    wait_until(lambda: "relay" in ready_message(api), 30, "/ready to name the relay", interval=0.1)
    service_unavailable(http(api.port, "GET", "/ready"), "not ready", "start-up seeding", "chainloom relay")
    # A write is stored but cannot be shown: a clear 503 naming the missing peer, not an exit.
    message = service_unavailable(
        http(api.port, "POST", "/backends", {"name": "early", "baseUrl": "http://early", "type": "ollama"}),
        "did not reach position",
        "relay",
    )
    assert "chainloom relay" in message, message
    api.assert_running()

    # The relay starts: now the projector workers are what is missing, and /ready says so.
    relay = processes("relay", env=peer_env(kafka_settings))

    def names_the_workers() -> bool:
        relay.assert_running()
        return "chainloom project" in ready_message(api)

    wait_until(names_the_workers, 60, "/ready to name the projector workers once the relay runs", interval=0.2)
    service_unavailable(
        http(api.port, "POST", "/backends", {"name": "still-early", "baseUrl": "http://still-early", "type": "ollama"}),
        "did not reach position",
        "chainloom project",
    )

    # A projector worker starts: everything converges, the API becomes ready by itself.
    worker = processes("project", env=peer_env(kafka_settings))
    until_ready(api.port, api, relay, worker)
    assert group_names(api.port) == INTERNAL_NAMES
    listed = {backend["name"] for backend in http(api.port, "GET", "/backends")[1]}
    assert {"early", "still-early"} <= listed  # the writes answered 503 were stored, and are shown now
    writes_succeed(api.port, "after-ready")
    seeded_once(kafka_settings)


@POSTGRES_ONLY
@pytest.mark.timeout(240)
def test_worker_first_then_relay_then_api_and_an_api_restarted(kafka_settings: Settings, processes: Callable[..., Process]):
    worker = processes("project", env=peer_env(kafka_settings))
    relay = processes("relay", env=peer_env(kafka_settings))
    api = processes("serve", env=api_env(kafka_settings))
    until_ready(api.port, api, relay, worker)
    assert group_names(api.port) == INTERNAL_NAMES
    writes_succeed(api.port, "worker-first")

    # An API restarted while its peers run seeds nothing new and is ready again.
    api.stop()
    again = processes("serve", env=api_env(kafka_settings))
    until_ready(again.port, again, relay, worker)
    writes_succeed(again.port, "restarted")
    seeded_once(kafka_settings)


@POSTGRES_ONLY
@pytest.mark.timeout(240)
def test_all_at_once_with_two_apis_of_two_workers_each(kafka_settings: Settings, processes: Callable[..., Process]):
    first = processes("serve", env=api_env(kafka_settings, CHAINLOOM_WORKERS="2"))
    second = processes("serve", env=api_env(kafka_settings, CHAINLOOM_WORKERS="2"))
    relay = processes("relay", env=peer_env(kafka_settings))
    worker = processes("project", env=peer_env(kafka_settings))
    standby = processes("project", env=peer_env(kafka_settings))
    # Each of an API's two worker processes becomes ready (each answer comes from whichever the kernel picks).
    for api in (first, second):
        ready_pids: set[int] = set()

        def both_ready() -> bool:
            for process in (first, second, relay, worker, standby):
                process.assert_running()
            try:
                status, body, _ = http(api.port, "GET", "/ready")
            except OSError:
                return False
            if status == 200:
                ready_pids.add(body["pid"])
            return len(ready_pids) == 2

        wait_until(both_ready, 90, f"both worker processes of the API on {api.port} to be ready", interval=0.05)
    writes_succeed(first.port, "at-once-1")
    writes_succeed(second.port, "at-once-2")
    assert {"at-once-1", "at-once-2"} <= {b["name"] for b in http(first.port, "GET", "/backends")[1]}
    seeded_once(kafka_settings)
