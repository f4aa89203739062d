"""Processes starting together on one fresh database create its tables once, without failing."""

import asyncio

from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import open_read_store
from chainloom.projections.registry import all_projectors
from chainloom.projections.runner import ProjectionRunner


async def test_many_processes_create_the_same_tables_at_once(settings):
    if settings.uses_postgres is False:
        settings.data_dir.mkdir(parents=True, exist_ok=True)

    def start_one() -> None:
        log = EventLog(settings.event_store_env())
        store, factory = open_read_store(settings.read_store_env())
        try:
            ProjectionRunner(log, store, all_projectors(), run_blocking=None).setup()
        finally:
            log.close()
            factory.close()

    # threads with their own connections stand in for processes: the race is in the database
    await asyncio.gather(*(asyncio.to_thread(start_one) for _ in range(8)))
