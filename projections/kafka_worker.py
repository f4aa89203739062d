"""Projector workers: the read models kept from Kafka by a consumer group (``chainloom project``).

The worker is the embedded projection runner with Kafka in place of the log:
``ProjectionRunner`` reads its batches through a ``KafkaLogReader``, applies
them to the same projectors and tracks their positions by ``nid`` in the same
read-store transaction as the rows. A record whose ``nid`` a projector has
already passed (a relay duplicate, or a record replayed after a restart) is
skipped, so every event is applied once. A projector that fails on an event
is faulted as in the embedded mode (recorded in the read store, where the API
sees it); the others go on.

The group's committed offset only says where to resume reading; the tracked
positions say what was applied. Each commit carries, as its metadata, the
position its offset corresponds to: on assignment the worker resumes from the
committed offset when the read store has reached that position, and reads
the topic from the beginning otherwise (a new or rebuilt read store).

The log topic has one partition, so one worker of a group is active and the
others stand by to take over (failover, not parallelism).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from chainloom.infra.kafka_log import consumer_config, decode, ensure_topic
from chainloom.infra.bootstrap import open_resources
from chainloom.infra.readstore import ReadStore
from chainloom.infra.settings import Settings
from chainloom.projections.base import Event
from chainloom.projections.registry import all_projectors
from chainloom.projections.runner import ProjectionRunner

logger = logging.getLogger(__name__)


class KafkaLogReader(ConsumerRebalanceListener):
    """The log as a projection runner reads it (``read``, ``head``), from the events topic."""

    def __init__(self, consumer: KafkaConsumer, topic: str, store_position: Callable[[], int]) -> None:
        self._consumer = consumer
        self._topic = topic
        self._store_position = store_position
        self._buffer: list[tuple[int, Event]] = []  # (offset, event) in partition order
        self._floor = 0  # every record before the consumer's position has nid <= floor
        self._unpositioned: list[TopicPartition] = []  # assigned, not yet positioned

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

    def fill(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for records, unless some are buffered already."""
        if self._buffer:
            return
        batches = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=1000)
        if self._unpositioned:
            # Assigned during this poll: what it fetched may start at the wrong place.
            self._position_assigned()
            return
        for records in batches.values():
            for record in records:
                self._buffer.append((record.offset, decode(record.value)))

    def commit(self, position: int) -> None:
        """The runner has applied everything up to ``position``: forget it, and commit the offset."""
        done = 0
        for index, (_, event) in enumerate(self._buffer):
            if event["nid"] > position:
                break
            done = index + 1
        if not done:
            return
        offset = self._buffer[done - 1][0] + 1
        del self._buffer[:done]
        self._floor = max(self._floor, position)
        partition = TopicPartition(self._topic, 0)
        try:
            self._consumer.commit({partition: OffsetAndMetadata(offset, str(position), -1)})
        except Exception as error:  # the next commit covers it; the positions are what count
            logger.warning("projector worker: committing offset %d failed: %s", offset, error)

    # -- rebalance listener -----------------------------------------------------

    def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._buffer.clear()

    def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        # Called on the client's network thread, where it may not block: position in ``fill``.
        self._buffer.clear()
        self._unpositioned = list(assigned)

    def _position_assigned(self) -> None:
        partitions, self._unpositioned = self._unpositioned, []
        self._buffer.clear()
        for partition in partitions:
            position = self._store_position()
            committed = self._consumer.committed(partition, metadata=True)
            resume_at = _position_of(committed)
            if committed is not None and resume_at is not None and resume_at <= position:
                self._consumer.seek(partition, committed.offset)
                self._floor = resume_at
                logger.info("projector worker: %s resumes at offset %d (position %d; read store at %d)",
                         partition.topic, committed.offset, resume_at, position)
            else:
                self._consumer.seek_to_beginning(partition)
                self._floor = 0
                logger.info("projector worker: %s read from the beginning (read store at %d)", partition.topic, position)

    def _restart(self) -> None:
        self._buffer.clear()
        self._floor = 0
        self._consumer.seek_to_beginning(*self._consumer.assignment())


def _position_of(committed: Any) -> int | None:
    if committed is None:
        return None
    try:
        return int(committed.metadata)
    except (TypeError, ValueError):
        return None


class ProjectorWorker:
    """One member of the projector group; ``run`` until ``stop``."""

    def __init__(self, settings: Settings, client_id: str = "chainloom-projector") -> None:
        self._settings = settings
        self._client_id = client_id
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self, ready: Callable[[], None] | None = None) -> None:
        settings = self._settings
        topic = settings.kafka_events_topic
        with open_resources(settings, log=False) as resources:
            store = resources.store
            projectors = all_projectors()
            names = [p.name for p in projectors]
            consumer = resources.closing(
                KafkaConsumer(**consumer_config(settings.kafka_bootstrap, settings.kafka_projector_group, self._client_id)),
                KafkaConsumer.close,
            )
            ensure_topic(settings.kafka_bootstrap, topic, settings.kafka_replication_factor, self._client_id)
            reader = KafkaLogReader(consumer, topic, lambda: _min_position(store, names))
            runner = ProjectionRunner(reader, store, projectors)
            runner.setup()
            consumer.subscribe([topic], listener=reader)
            logger.info("projector worker: group %s on %s (%s)", settings.kafka_projector_group, topic, ", ".join(names))
            if ready is not None:
                ready()
            self._follow(reader, runner)

    def _follow(self, reader: KafkaLogReader, runner: ProjectionRunner) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            reader.fill(timeout=0.2)
            try:
                position, more = runner.process_batch()
            except Exception:
                # Another process tracked first, or the store is briefly away: the batch
                # was dropped whole; apply it again (what is done is skipped).
                logger.exception("projector worker: batch failed; retrying in %.2fs", backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.05
            reader.commit(position)
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
