"""The Kafka relay: publishes the log, in position order, to the one-partition events topic.

Each step reads the events after the relay's tracked position, publishes them
in chunks and, once Kafka has acknowledged a whole chunk (idempotent producer,
``acks=all``), tracks the chunk's last ``nid`` as ``kafka-relay:<topic>`` in
the library's tracking table: in PostgreSQL's, or with SQLite in a file of the
relay's own (``relay.sqlite``), since a write to the log's or the read models'
file would queue behind their writers' and stall the relay. A chunk is sent as one
producer batch and flushed before the next one is sent, so it lands on the
broker whole or not at all, and never after a later one: the topic holds the
log in order, with no gaps. What a crash can leave is a chunk that Kafka
stored but the relay had not yet tracked; it is published again on restart —
the only duplicates there are, with the same ``id`` and ``nid`` as the first
copy (docs/kafka.md tells consumers how to drop them).

Only one relay publishes a topic at a time: a PostgreSQL advisory lock (or a
file lock beside the SQLite log) makes any other one a standby that takes over
when the active one dies. The relay runs inside ``chainloom serve`` when Kafka
is configured, or alone as ``chainloom relay``; in both it is driven by the one
follower loop (``infra/follower.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, ExitStack
from typing import Any

from chainloom.infra.bootstrap import open_resources
from chainloom.infra.eventlog import EventLog
from chainloom.infra.follower import Follower
from chainloom.infra.singleton import AdvisoryLock, FileLock
from chainloom.infra.kafka_log import (
    PRODUCER_BATCH_BYTES,
    check_no_clear_secrets,
    ensure_topic,
    producer_config,
    record_headers,
    record_key,
    record_value,
)
from chainloom.infra.readstore import ReadStore, open_read_store
from chainloom.infra.settings import Settings

logger = logging.getLogger(__name__)

# Room left in a producer batch for record framing.
_CHUNK_BYTES = PRODUCER_BATCH_BYTES * 3 // 4
_RECORD_OVERHEAD = 64


# -- the relay ------------------------------------------------------------------


class KafkaRelay:
    """The blocking part: ``step`` publishes the next batch; call it from one thread at a time."""

    def __init__(
        self,
        log: EventLog,
        tracking_env: Mapping[str, str],
        lock: FileLock | AdvisoryLock,
        *,
        bootstrap: str,
        topic: str,
        replication_factor: int = 1,
        batch_size: int = 1000,
        client_id: str = "chainloom-relay",
    ) -> None:
        self._log = log
        self._tracking_env = dict(tracking_env)
        self._store: ReadStore | None = None
        self._store_factory: Any = None
        self._lock = lock
        self._bootstrap = bootstrap
        self.topic = topic
        self._replication_factor = replication_factor
        self._batch_size = batch_size
        self._client_id = client_id
        self.name = f"kafka-relay:{topic}"
        self._producer: Any = None
        self._position = 0
        self._active = False

    @property
    def position(self) -> int:
        """The last position Kafka has acknowledged (as far as this relay knows)."""
        return self._position

    @property
    def holding(self) -> bool:
        """Whether this relay holds the relay lock (and publishes); others stand by."""
        return self._active

    def step(self) -> tuple[int, bool]:
        if not self._lock.acquire():
            if self._active:
                logger.warning("kafka relay: lost the relay lock; standing by")
                self._discard_producer()
                self._active = False
            return self._position, False
        if self._producer is None:
            self._connect()
        events = self._log.read(after=self._position, limit=self._batch_size)
        if not events:
            return self._position, False
        for chunk in self._chunks(events):
            self._publish(chunk)
            self._track(chunk[-1]["nid"])
        return self._position, len(events) == self._batch_size

    def drain(self) -> int:
        """Publish until the end of the log as it is now; returns the position reached."""
        while True:
            position, more = self.step()
            if not more:
                return position

    def _connect(self) -> None:
        from kafka import KafkaProducer

        if self._store is None:
            self._store, self._store_factory = open_read_store(self._tracking_env)
        self.ensure_topic()
        self._producer = KafkaProducer(**producer_config(self._bootstrap, self._client_id))
        self._position = self._store.position(self.name)
        if not self._active:
            logger.info("kafka relay: publishing %s from position %d", self.topic, self._position)
            self._active = True

    def ensure_topic(self) -> None:
        ensure_topic(self._bootstrap, self.topic, self._replication_factor, self._client_id)

    @staticmethod
    def _chunks(events: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        chunk: list[dict[str, Any]] = []
        size = 0
        for event in events:
            event_size = len(record_value(event)) + _RECORD_OVERHEAD * 2
            if chunk and size + event_size > _CHUNK_BYTES:
                yield chunk
                chunk, size = [], 0
            chunk.append(event)
            size += event_size
        if chunk:
            yield chunk

    def _publish(self, chunk: list[dict[str, Any]]) -> None:
        for event in chunk:
            check_no_clear_secrets(event)
        producer = self._producer
        try:
            futures = [
                producer.send(
                    self.topic, key=record_key(e), value=record_value(e), headers=record_headers(e), partition=0
                )
                for e in chunk
            ]
            producer.flush()
            for future in futures:
                future.get(timeout=0)
        except Exception:
            # Whether Kafka stored the chunk is unknown: start over with a new producer from the
            # tracked position (the chunk may then appear twice, never out of order).
            self._discard_producer()
            raise

    def _track(self, position: int) -> None:
        assert self._store is not None
        with self._store.transaction() as cursor:
            self._store.track(cursor, self.name, position)
        self._position = position

    def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:  # pragma: no cover - closing a broken producer
                logger.debug("closing the Kafka producer failed", exc_info=True)

    def abort(self) -> None:
        """From another thread: make a step stuck on an unreachable broker fail now."""
        producer = self._producer
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:  # pragma: no cover
                logger.debug("aborting the Kafka producer failed", exc_info=True)

    def close(self) -> None:
        self._discard_producer()
        self._lock.release()
        if self._store_factory is not None:
            self._store_factory.close()
            self._store, self._store_factory = None, None


def relay_lock(settings: Settings) -> FileLock | AdvisoryLock:
    topic = settings.kafka_events_topic
    if settings.uses_postgres:
        return AdvisoryLock(settings.database_url, f"chainloom-kafka-relay:{topic}")
    return FileLock(settings.data_dir / f"kafka-relay.{topic}.lock")


class RelayService:
    """The relay in a running process: the follower loop on a thread of its own."""

    def __init__(self, relay: KafkaRelay, idle_poll: float) -> None:
        self.relay = relay
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-relay")
        self._follower = Follower(relay.step, self._run, name="kafka-relay", idle_poll=idle_poll, what="the Kafka relay")

    async def _stop_and_drain(self) -> None:
        await self._follower.stop()
        await self._run(self.relay.drain)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def position(self) -> int:
        return self._follower.position

    @property
    def holding(self) -> bool:
        return self.relay.holding

    def start(self) -> None:
        self._follower.start()

    def poke(self) -> None:
        self._follower.poke()

    async def wait_for(self, position: int | None, timeout: float) -> None:
        await self._follower.wait_for(position, timeout)

    async def stop(self, grace: float = 5.0) -> None:
        """Publish what the log holds now, then close; past ``grace`` seconds (broker away), give up."""
        stopping = asyncio.ensure_future(self._stop_and_drain())
        done, _ = await asyncio.wait({stopping}, timeout=grace)
        if not done:
            self.relay.abort()
            try:
                await stopping
            except Exception:
                logger.warning("kafka relay: stopped before the log was fully published; the next start resumes")
        await self._run(self.relay.close)
        self._executor.shutdown(wait=True)


def relay_tracking_env(settings: Settings) -> dict[str, str]:
    """Where the relay tracks its position: the PostgreSQL database, or a SQLite file of its own."""
    env = settings.event_store_env()
    if not settings.uses_postgres:
        env["SQLITE_DBNAME"] = str(settings.data_dir / "relay.sqlite")
    return env


def open_relay(settings: Settings, log: EventLog) -> RelayService:
    """The relay of the configured log and topic (it opens its tracking store when it first runs)."""
    relay = KafkaRelay(
        log,
        relay_tracking_env(settings),
        relay_lock(settings),
        bootstrap=settings.kafka_bootstrap,
        topic=settings.kafka_events_topic,
        replication_factor=settings.kafka_replication_factor,
    )
    return RelayService(relay, settings.kafka_relay_poll)


async def run_relay(settings: Settings) -> None:
    """``chainloom relay``: relay until SIGINT or SIGTERM, then stop cleanly."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with AsyncExitStack() as stack:
        opened = ExitStack()
        stack.push_async_callback(asyncio.to_thread, opened.close)
        resources = await asyncio.to_thread(opened.enter_context, open_resources(settings, read_store=False))
        service = open_relay(settings, resources.log)
        service.start()
        stack.push_async_callback(service.stop)
        await stop.wait()
