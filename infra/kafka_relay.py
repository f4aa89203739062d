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

Every record carries the event's seal in the log's hash chain (headers
``chain_hash``, ``chain_prev``: ``infra/seals.py``). The relay does not wait for
the sealer: before publishing a batch it seals whatever of it the sealer has not
yet reached (the hash is deterministic, so whoever seals a position gets the
same), and reads the hashes in one query — the relay's latency does not add the
sealer's lag, and a relay running alone (``chainloom relay``) needs no sealer.

Only one relay publishes a topic at a time: a PostgreSQL advisory lock (or a
file lock beside the SQLite log) makes any other one a standby, which tries
the lock every ``LOCK_RETRY`` seconds and takes over when the active one dies
(the database or the operating system releases the lock at once, kill -9
included). The relay runs inside ``chainloom serve`` when Kafka is configured,
or alone as ``chainloom relay``; in both it is driven by the one follower loop
(``infra/follower.py``). A write of this process pokes it; on PostgreSQL the
log's own ``NOTIFY`` on every append (whoever appended) wakes it, and it looks
at the log unasked only every ``LISTENING_POLL`` seconds; on SQLite (or while
it cannot listen) it looks every ``CHAINLOOM_KAFKA_RELAY_POLL`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, ExitStack
from typing import Any

from chainloom.infra import seals
from chainloom.infra.bootstrap import open_resources
from chainloom.infra.eventlog import EventLog
from chainloom.infra.follower import Follower
from chainloom.infra.singleton import AdvisoryLock, FileLock, Lock, Throttled
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

# How often a standby relay tries to take the relay lock (a PostgreSQL attempt costs a connection):
# it takes over from a dead relay within this, plus connecting its producer.
LOCK_RETRY = 0.5

# While the log's notifications wake the relay (PostgreSQL), the active relay looks at the log unasked
# only this often (a standby keeps looking as configured: each look tries the lock, when it is due).
LISTENING_POLL = 0.5

# Room left in a producer batch for record framing.
_CHUNK_BYTES = PRODUCER_BATCH_BYTES * 3 // 4
_RECORD_OVERHEAD = 64
# The chain headers' share of a record (two names, two 64-digit hashes, their framing).
_CHAIN_HEADERS = 2 * (len("chain_hash") + 64 + 16)


# -- the relay ------------------------------------------------------------------


class KafkaRelay:
    """The blocking part: ``step`` publishes the next batch; call it from one thread at a time."""

    def __init__(
        self,
        log: EventLog,
        tracking_env: Mapping[str, str],
        lock: Lock,
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
        self._standing_by = False

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
            if not self._standing_by:
                logger.info("kafka relay: standing by (another relay publishes %s)", self.topic)
                self._standing_by = True
            return self._position, False
        self._standing_by = False
        if self._producer is None:
            self._connect()
        events = self._log.read(after=self._position, limit=self._batch_size)
        if not events:
            return self._position, False
        chain = seals.links(self._log, [e["nid"] for e in events])
        for chunk in self._chunks(events):
            self._publish(chunk, chain)
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
        seals.ensure(self._log)
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
            event_size = len(record_value(event)) + _RECORD_OVERHEAD * 2 + _CHAIN_HEADERS
            if chunk and size + event_size > _CHUNK_BYTES:
                yield chunk
                chunk, size = [], 0
            chunk.append(event)
            size += event_size
        if chunk:
            yield chunk

    def _publish(self, chunk: list[dict[str, Any]], chain: Mapping[int, tuple[str, str]]) -> None:
        for event in chunk:
            check_no_clear_secrets(event)
        producer = self._producer
        try:
            futures = [
                producer.send(
                    self.topic,
                    key=record_key(e),
                    value=record_value(e),
                    headers=record_headers(e, chain[e["nid"]]),
                    partition=0,
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


def relay_lock(settings: Settings) -> Throttled:
    """The relay lock of the topic, tried by a standby every ``LOCK_RETRY`` seconds."""
    topic = settings.kafka_events_topic
    lock: FileLock | AdvisoryLock
    if settings.uses_postgres:
        lock = AdvisoryLock(settings.database_url, f"chainloom-kafka-relay:{topic}")
    else:
        lock = FileLock(settings.data_dir / f"kafka-relay.{topic}.lock")
    return Throttled(lock, LOCK_RETRY)


class LogNotifications:
    """Calls ``wake()`` whenever the log's PostgreSQL recorder announces an append (its ``NOTIFY`` on every
    insert, whichever process wrote), from a thread of its own with a connection that ``LISTEN``s;
    ``listening(True)`` once it listens, ``listening(False)`` when it lost the connection."""

    def __init__(
        self, url: str, channel: str, wake: Callable[[], None], listening: Callable[[bool], None]
    ) -> None:
        self._url = url
        self._channel = channel
        self._wake = wake
        self._listening = listening
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="kafka-relay-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Blocks until the thread has ended (at most about 0.2 s)."""
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def _listen(self) -> None:
        import psycopg
        from psycopg import sql

        while not self._stopped.is_set():
            try:
                with psycopg.connect(
                    self._url, autocommit=True, connect_timeout=10,
                    keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                ) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    self._listening(True)
                    self._wake()  # appends made while not listening
                    while not self._stopped.is_set():
                        for _ in conn.notifies(timeout=0.2, stop_after=1):
                            self._wake()
            except Exception as error:  # the relay's own poll finds every append meanwhile
                self._listening(False)
                logger.warning("kafka relay: listening for appends failed (%s); polling, listening again in 1 s", error)
                self._stopped.wait(1.0)


class RelayService:
    """The relay in a running process: the follower loop on a thread of its own."""

    def __init__(self, relay: KafkaRelay, idle_poll: float, notify_channel: tuple[str, str] | None = None) -> None:
        """``notify_channel``: (PostgreSQL URL, channel) on which the log announces appends; while it
        listens there the relay is woken by them, and looks at the log unasked only every ``LISTENING_POLL``."""
        self.relay = relay
        self._idle_poll = idle_poll
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-relay")
        self._follower = Follower(
            relay.step, self._run, name="kafka-relay", idle_poll=idle_poll, what="the Kafka relay", on_step=self._stepped
        )
        self._notify_channel = notify_channel
        self._notifications: LogNotifications | None = None
        self._notified = False  # whether the log's notifications wake this relay now

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

    @property
    def last_error(self) -> tuple[float, str] | None:
        """Why the latest step failed (wall-clock time, error), None once one succeeds: ``GET /relay``."""
        return self._follower.last_error

    def start(self) -> None:
        self._follower.start()

    def _listen(self) -> None:
        """Have the log's notifications wake this relay (from when it first publishes: a standby needs none)."""
        assert self._notify_channel is not None
        loop = asyncio.get_running_loop()

        def call(fn: Callable[..., None], *args: Any) -> None:
            try:
                loop.call_soon_threadsafe(fn, *args)
            except RuntimeError:  # the loop is closing
                pass

        self._notifications = LogNotifications(
            *self._notify_channel,
            wake=lambda: call(self._follower.poke),
            listening=lambda yes: call(self._listening, yes),
        )
        self._notifications.start()

    def _listening(self, yes: bool) -> None:
        """Notifications wake the relay now (or no longer do)."""
        self._notified = yes
        self._stepped()

    def _stepped(self, _: object = None) -> None:
        """The active relay woken by notifications looks at the log unasked rarely; otherwise as configured."""
        if self._notifications is None and self._notify_channel is not None and self.relay.holding:
            self._listen()
        notified = self._notified and self.relay.holding
        self._follower.idle_poll = max(self._idle_poll, LISTENING_POLL) if notified else self._idle_poll

    def poke(self) -> None:
        self._follower.poke()

    async def wait_for(self, position: int | None, timeout: float) -> None:
        await self._follower.wait_for(position, timeout)

    async def stop(self, grace: float = 5.0) -> None:
        """Publish what the log holds now, then close; past ``grace`` seconds (broker away), give up."""
        if self._notifications is not None:
            await asyncio.to_thread(self._notifications.stop)
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
    channel = getattr(log.recorder, "channel_name", None) if settings.uses_postgres else None
    return RelayService(relay, settings.kafka_relay_poll, (settings.database_url, channel) if channel else None)


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
