"""On PostgreSQL the relay hears of every append at once: the log's NOTIFY wakes it, whoever appended.

The relay also looks at the log every ``CHAINLOOM_KAFKA_RELAY_POLL`` seconds; here that is an hour,
so only the notification can make it publish what another process appends after it started.
"""

from __future__ import annotations

import pytest

from chainloom.infra.settings import Settings
from tests.integration.kafka.conftest import process_env, read_topic, wait_until
from tests.integration.kafka.test_relay import Appender
from tests.integration.serve_process import log_events


@pytest.mark.timeout(120)
@pytest.mark.parametrize("store_kind", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_appends_of_another_process_wake_the_relay_without_its_poll(store_kind: str, kafka_settings: Settings, processes):
    """(PostgreSQL only: SQLite has no notifications, the relay polls it.)"""
    relay = processes("relay", env=process_env(kafka_settings, CHAINLOOM_KAFKA_RELAY_POLL="3600", CHAINLOOM_LOG_LEVEL="INFO"))
    wait_until(lambda: "kafka relay: publishing" in relay.output(), 60, "the relay to start publishing", interval=0.1)

    appender = Appender(kafka_settings, backends=50, updates=1, pause=0.05)  # 100 events, appended after the start
    appender.start()
    appender.join(60)
    assert appender.error is None, appender.error
    expected = log_events(kafka_settings)
    assert len(expected) == 100

    events = read_topic(
        kafka_settings.kafka_bootstrap, kafka_settings.kafka_events_topic,
        lambda got: bool(got) and max(e["nid"] for e in got) >= expected[-1]["nid"], timeout=60,
    )
    relay.assert_running()
    assert events == expected
