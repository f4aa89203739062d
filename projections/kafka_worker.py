"""Projector workers: the read models kept from Kafka (``chainloom project``), one active worker at a time.

The worker is the embedded projection runner with Kafka in place of the log:
``ProjectionRunner`` reads its batches through a ``KafkaLogReader``, applies
them to the same projectors and tracks their positions by ``nid`` in the same
read-store transaction as the rows. A record whose ``nid`` a projector has
already passed (a relay duplicate, or a record read again after a take-over)
is skipped, so every event is applied once. A projector that fails on an event
is faulted as in the embedded mode (recorded in the read store, where the API
sees it); the others go on.

The log topic has one partition, so one worker projects and the others stand
by (fail-over, not parallelism). Who is active is not left to Kafka's consumer
group protocol (a dead member is noticed only after the session timeout, 6 s at
the least): the worker takes the singleton lock of its group on the read store
(``infra/singleton.py``: a PostgreSQL session advisory lock, or a file lock
beside the SQLite read store), which the database or the operating system
releases the moment its holder dies, kill -9 included. A standby tries the
lock every ``LOCK_RETRY`` seconds with its Kafka connection already open, and
once it has it ``assign``s itself the partition: it takes over within about
half a second. Exclusivity is for efficiency only: batches of all processes
take the read store's projection lock and track positions in their own
transaction, so even two active workers would apply every event once.

The offsets committed to Kafka (as group ``CHAINLOOM_KAFKA_GROUP``, without
joining it) only say where to resume reading; the tracked positions say what
was applied. Each commit carries, as its metadata, the position its offset
corresponds to: on taking over, the worker resumes from the committed offset
when the read store has reached that position, and reads the topic from the
beginning otherwise (a new or rebuilt read store).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from chainloom.infra.bootstrap import open_resources
from chainloom.infra.kafka_log import consumer_config, decode, ensure_topic
from chainloom.infra.readstore import ReadStore
from chainloom.infra.settings import Settings
from chainloom.infra.singleton import Lock, singleton_lock
from chainloom.infra.vectors import VectorStore
from chainloom.projections.base import Event
from chainloom.projections.registry import all_projectors
from chainloom.projections.runner import ProjectionRunner

logger = logging.getLogger(__name__)

# How often a standby tries to take the group's lock (a PostgreSQL attempt costs a connection): it
# takes over from a dead worker within this, plus positioning and a first fetch.
LOCK_RETRY = 0.5
# At most one offset commit in this many seconds (asynchronous: the offset is only a hint where to
# resume; a stale one costs reading a few records again, which are skipped by nid).
COMMIT_EVERY = 1.0


class KafkaLogReader:
    """The log as a projection runner reads it (``read``, ``head``), from the events topic's partition."""

    def __init__(self, consumer: KafkaConsumer, topic: str, store_position: Callable[[], int]) -> None:
        self._consumer = consumer
        self._topic = topic
        self._partition = TopicPartition(topic, 0)
        self._store_position = store_position
        self._buffer: list[tuple[int, Event]] = []  # (offset, event) in partition order
        self._floor = 0  # every record before the consumer's position has nid <= floor
        self._assigned = False
        self._to_commit: tuple[int, int] | None = None  # (offset, position) not yet committed
        self._committed_at = 0.0

    # -- what the runner calls ------------------------------------------------

    def read(self, after: int, limit: int) -> list[Event]:
        """The buffered events with ``nid`` > ``after``, in order, duplicates left out. Never blocks."""
        if after < self._floor:
            # The read store is behind what was read (it was reset): read the topic again.
            logger.info("projector worker: read store at %d, behind the topic position %d; reading from the start",
                        after, self._floor)
            self._restart()
            return []
        events: list[Event] = []
        last = after
        for _, event in self._buffer:
            if event["nid"] > last:
                events.append(event)
                last = event["nid"]
                if len(events) == limit:
                    break
        return events

    def head(self) -> int:
        return 0

    @property
    def buffered(self) -> bool:
        return bool(self._buffer)

    # -- what the worker loop calls ---------------------------------------------

    @property
    def assigned(self) -> bool:
        return self._assigned

    def assign(self) -> None:
        """Read the partition from here on: from the committed offset when the read store has reached the
        position it stands for, from the beginning otherwise."""
        self._buffer.clear()
        self._to_commit = None
        partition = self._partition
        self._consumer.assign([partition])
        position = self._store_position()
        committed = self._consumer.committed(partition, metadata=True)
        resume_at = _position_of(committed)
        if committed is not None and resume_at is not None and resume_at <= position:
            self._consumer.seek(partition, committed.offset)
            self._floor = resume_at
            logger.info("projector worker: %s resumes at offset %d (position %d; read store at %d)",
                        self._topic, committed.offset, resume_at, position)
        else:
            self._consumer.seek_to_beginning(partition)
            self._floor = 0
            logger.info("projector worker: %s read from the beginning (read store at %d)", self._topic, position)
        self._assigned = True

    def unassign(self) -> None:
        """Stop reading (another worker is active now)."""
        self._buffer.clear()
        self._to_commit = None
        self._consumer.unsubscribe()
        self._assigned = False

    def fill(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for records, unless some are buffered already."""
        if self._buffer:
            return
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=1000)
        for records in batches.values():
            for record in records:
                self._buffer.append((record.offset, decode(record.value)))

    def applied(self, position: int) -> None:
        """The runner has applied everything up to ``position``: forget it (and commit its offset, now and then)."""
        done = 0
        for index, (_, event) in enumerate(self._buffer):
            if event["nid"] > position:
                break
            done = index + 1
        if done:
            self._to_commit = (self._buffer[done - 1][0] + 1, position)
            del self._buffer[:done]
            self._floor = max(self._floor, position)
        if self._to_commit is not None and time.monotonic() - self._committed_at >= COMMIT_EVERY:
            self.commit()

    def commit(self, wait: bool = False) -> None:
        """Commit the offset after what was applied, with the position it stands for as metadata."""
        if self._to_commit is None or not self._assigned:
            return
        offset, position = self._to_commit
        self._to_commit = None
        self._committed_at = time.monotonic()
        offsets = {self._partition: OffsetAndMetadata(offset, str(position), -1)}
        try:
            if wait:
                self._consumer.commit(offsets, timeout_ms=5000)
            else:
                self._consumer.commit_async(offsets, callback=_commit_done)
        except Exception as error:  # the next commit covers it; the positions are what count
            logger.warning("projector worker: committing offset %d failed: %s", offset, error)

    def _restart(self) -> None:
        self._buffer.clear()
        self._to_commit = None
        self._floor = 0
        self._consumer.seek_to_beginning(self._partition)


def _commit_done(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        logger.warning("projector worker: committing offsets failed: %s", response)


def _position_of(committed: Any) -> int | None:
    if committed is None:
        return None
    try:
        return int(committed.metadata)
    except (TypeError, ValueError):
        return None


class ProjectorWorker:
    """One worker of the projector group: active while it holds the group's lock, standing by otherwise;
    ``run`` until ``stop``."""

    def __init__(self, settings: Settings, client_id: str = "chainloom-projector") -> None:
        self._settings = settings
        self._client_id = client_id
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, ready: Callable[[], None] | None = None) -> None:
        settings = self._settings
        topic = settings.kafka_events_topic
        group = settings.kafka_projector_group
        with open_resources(settings, log=False) as resources:
            store = resources.store
            projectors = all_projectors(VectorStore(settings.vector_directory), settings.activity_retention)
            names = [p.name for p in projectors]
            consumer = resources.closing(
                KafkaConsumer(
                    **consumer_config(settings.kafka_bootstrap, group, self._client_id, settings.kafka_bootstrap_timeout)
                ),
                KafkaConsumer.close,
            )
            ensure_topic(settings.kafka_bootstrap, topic, settings.kafka_replication_factor, self._client_id)
            consumer.partitions_for_topic(topic)  # metadata now: a take-over then only positions and fetches
            reader = KafkaLogReader(consumer, topic, lambda: _min_position(store, names))
            runner = ProjectionRunner(reader, store, projectors)
            runner.setup()
            # Released before the consumer and the store close (after the last offset commit): a standby
            # takes over at once when this worker stops.
            lock = singleton_lock(settings, f"kafka-projector:{group}")
            resources.on_close(lock.release)
            resources.on_close(lambda: reader.commit(wait=True))  # where a successor resumes
            logger.info("projector worker: group %s on %s (%s)", group, topic, ", ".join(names))
            if ready is not None:
                ready()
            self._follow(lock, reader, runner, group)

    def _follow(self, lock: Lock, reader: KafkaLogReader, runner: ProjectionRunner, group: str) -> None:
        backoff = 0.05
        standing_by = False
        while not self._stop.is_set():
            if not lock.acquire():
                if reader.assigned:
                    logger.warning("projector worker: lost the lock of group %s; standing by", group)
                    reader.unassign()
                if not standing_by:
                    logger.info("projector worker: standing by (another worker of group %s is active)", group)
                    standing_by = True
                self._stop.wait(LOCK_RETRY)
                continue
            try:
                if not reader.assigned:
                    reader.assign()
                    logger.info("projector worker: active for group %s", group)
                    standing_by = False
                reader.fill(timeout=0.2)
                position, more = runner.process_batch()
            except Exception:
                # Another process tracked first, or the store or the broker is briefly away: the
                # batch was dropped whole; apply it again (what is done is skipped).
                logger.exception("projector worker: batch failed; retrying in %.2fs", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.05
            reader.applied(position)
            if not more and reader.buffered:
                # Buffered records no projector takes (every one is faulted): wait for an operator.
                self._stop.wait(0.2)


def _min_position(store: ReadStore, names: list[str]) -> int:
    with store.transaction(commit=False) as cursor:
        return min(store.positions(cursor, names).values())


def run_worker(settings: Settings) -> None:
    """``chainloom project``: run until SIGINT or SIGTERM."""
    worker = ProjectorWorker(settings)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: worker.stop())
    started = time.monotonic()
    worker.run()
    logger.info("projector worker stopped after %.0fs", time.monotonic() - started)
