"""Fail-over in the distributed mode: kill -9 the active projector worker or relay while a standby runs.

One projector worker of a group projects and the others stand by, by the group's singleton lock on the
read store (not by Kafka's consumer-group sessions); one relay publishes a topic and the others stand
by, by the relay lock. Here the active one is killed (kill -9, mid-stream, twice in a row) while
events are appended: the standby takes over, and

- the read models the workers kept end exactly equal to the read models built from the log itself
  (a rebuild: what the embedded mode computes), every projector at the log's head, no fault — nothing
  lost, nothing applied twice;
- the topic holds the log whole and in order, with duplicates only as docs/kafka.md allows (copies of
  the chunk a killed relay had published but not yet tracked, each an exact copy of an earlier record).

Which process is active is read from its own log (it logs at INFO when it takes over or stands by).
Speed is not asserted here: ``bench/bench_failover.py`` prints the fail-over times.
"""

from __future__ import annotations

import pytest

from chainloom.infra.readstore import open_read_store
from chainloom.infra.settings import Settings
from chainloom.projections.rebuild import rebuild
from chainloom.projections.registry import all_projectors
from tests.integration.kafka.conftest import (
    Process,
    assert_order_per_aggregate,
    process_env,
    read_topic,
    wait_until,
    without_duplicates,
)
from tests.integration.kafka.test_projector_worker import head, positions, read_models
from tests.integration.kafka.test_relay import Appender
from tests.integration.serve_process import log_events

WORKER_ACTIVE = "projector worker: active"
WORKER_STANDING_BY = "projector worker: standing by"
RELAY_ACTIVE = "kafka relay: publishing"
RELAY_STANDING_BY = "kafka relay: standing by"


def _logged(process: Process, line: str) -> bool:
    process.assert_running()
    return line in process.output()


def _reached(settings: Settings) -> int:
    reached = positions(settings)
    return min(reached.values()) if reached else 0


def _faults(settings: Settings) -> dict:
    store, factory = open_read_store(settings.read_store_env())
    try:
        with store.transaction(commit=False) as cursor:
            return store.faults(cursor)
    finally:
        factory.close()


@pytest.mark.timeout(240)
def test_killing_the_active_projector_worker_hands_over_to_the_standby_with_nothing_lost_or_repeated(
    kafka_settings: Settings, processes
):
    kafka_settings.data_dir.mkdir(parents=True, exist_ok=True)
    processes("relay", env=process_env(kafka_settings))
    worker_env = process_env(kafka_settings, CHAINLOOM_LOG_LEVEL="INFO")
    active = processes("project", env=worker_env)
    wait_until(lambda: _logged(active, WORKER_ACTIVE), 60, "the first worker to become active", interval=0.1)
    standby = processes("project", env=worker_env)
    wait_until(lambda: _logged(standby, WORKER_STANDING_BY), 60, "the second worker to stand by", interval=0.1)

    appender = Appender(kafka_settings, backends=300, updates=4, pause=0.03)  # 1,500 events, ~5 s and more
    appender.start()
    kills = []
    for threshold in (300, 800):
        wait_until(lambda: _reached(kafka_settings) >= threshold, 60, f"the workers to project {threshold} events",
                   interval=0.05)
        assert WORKER_ACTIVE not in standby.output(), "the standby projected while the active worker ran"
        active.kill()
        kills.append((appender.appended, _reached(kafka_settings)))
        # The standby takes over (the killed worker is not restarted before it has).
        wait_until(lambda: _logged(standby, WORKER_ACTIVE), 60, "the standby to take over", interval=0.05)
        wait_until(lambda: _reached(kafka_settings) > kills[-1][1], 60, "the new active worker to project")
        active, standby = standby, processes("project", env=worker_env)
        wait_until(lambda: _logged(standby, WORKER_STANDING_BY), 60, "the restarted worker to stand by", interval=0.1)
    appender.join(120)
    assert appender.error is None, appender.error
    assert appender.appended == 1500
    assert all(appended < 1500 for appended, _ in kills), f"a worker was not killed mid-stream: {kills}"

    last = head(kafka_settings)
    names = [p.name for p in all_projectors()]
    wait_until(lambda: _reached(kafka_settings) >= last, 60, "the active worker to reach the log's head", interval=0.1)
    active.assert_running()
    standby.assert_running()
    active.stop()
    standby.stop()
    assert positions(kafka_settings) == {name: last for name in names}
    assert _faults(kafka_settings) == {}
    projected = read_models(kafka_settings)
    assert sum(len(rows) for rows in projected.values()) >= 300

    # What the embedded mode computes from the log itself: the same rows, no more, no fewer.
    assert rebuild(kafka_settings) == last
    assert read_models(kafka_settings) == projected
    print(f"workers killed at (appended, projected) {kills}")


@pytest.mark.timeout(240)
def test_killing_the_active_relay_hands_over_to_the_standby_with_duplicates_only_as_documented(
    kafka_settings: Settings, processes
):
    kafka_settings.data_dir.mkdir(parents=True, exist_ok=True)
    relay_env = process_env(kafka_settings, CHAINLOOM_LOG_LEVEL="INFO")
    active = processes("relay", env=relay_env)
    wait_until(lambda: _logged(active, RELAY_ACTIVE), 60, "the first relay to publish", interval=0.1)
    standby = processes("relay", env=relay_env)
    wait_until(lambda: _logged(standby, RELAY_STANDING_BY), 60, "the second relay to stand by", interval=0.1)

    appender = Appender(kafka_settings, backends=300, updates=4, pause=0.03)  # 1,500 events, ~5 s and more
    appender.start()
    bootstrap, topic = kafka_settings.kafka_bootstrap, kafka_settings.kafka_events_topic
    kills = []
    for published in (300, 800):
        read_topic(bootstrap, topic, lambda got: len(got) >= published, timeout=60)
        assert RELAY_ACTIVE not in standby.output(), "the standby published while the active relay ran"
        active.kill()
        kills.append(appender.appended)
        # The standby takes over (the killed relay is not restarted before it has).
        wait_until(lambda: _logged(standby, RELAY_ACTIVE), 60, "the standby relay to take over", interval=0.05)
        active, standby = standby, processes("relay", env=relay_env)
        wait_until(lambda: _logged(standby, RELAY_STANDING_BY), 60, "the restarted relay to stand by", interval=0.1)
    appender.join(120)
    assert appender.error is None, appender.error
    assert appender.appended == 1500
    assert all(appended < 1500 for appended in kills), f"a relay was not killed mid-stream: {kills}"

    expected = log_events(kafka_settings)
    assert len(expected) == 1500
    events = read_topic(
        bootstrap, topic, lambda got: bool(got) and max(e["nid"] for e in got) >= expected[-1]["nid"], timeout=90,
    )
    active.assert_running()
    standby.assert_running()
    kept, duplicates = without_duplicates(events)  # checks every duplicate is an exact copy of an earlier record
    assert kept == expected, "the topic is not the log: lost or reordered events"
    assert_order_per_aggregate(kept)
    # At most one chunk (1,000 events) per kill: what the killed relay had published but not yet tracked.
    assert duplicates <= len(kills) * 1000, duplicates
    print(f"relays killed after {kills} appends; {duplicates} duplicates on the topic")
