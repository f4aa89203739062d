"""Commands of the event source: append events, ingest webhooks, replay, mappings, erase.

Every write lands in the one log. External events are stored as stated
(``EnvelopeMapper.to_stored_external``); raw events, mapping changes and audits
are chainloom's own aggregates. Each command answers once the read models
have caught up with what it wrote (read-your-writes), also when it refuses a
webhook after keeping its raw payload.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from eventsourcing.persistence import RecordConflictError, StoredEvent

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decide, Decision
from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict, DomainError, Forbidden, NotFound, TooLarge, Unauthorized, Unprocessable
from chainloom.domain.eventsource.events import (
    ERASABLE_INTERNAL_TYPES,
    INTERNAL_EVENT_SOURCE,
    RAW_EVENT_RECEIVED,
    EventDeletion,
    ExternalEvent,
    RawEvent,
    WebhookDelivery,
)
from chainloom.domain.eventsource.mappings import EventMapping, MappingConfig, apply_mapping
from chainloom.domain.eventsource.signatures import check_secret, verify
from chainloom.domain.storable import check_storable
from chainloom.infra.erasure import erase
from chainloom.infra.eventlog import EventLog
from chainloom.infra.logwriter import LogWriter
from chainloom.infra.secrets import SecretBox, SecretsUnavailable
from chainloom.infra.timefmt import format_ns, parse_ns

Json = dict[str, Any]
RunBlocking = Callable[..., Awaitable[Any]]

# Credentials sent with a webhook are never kept with its raw event: Authorization,
# cookies, API keys, and secret tokens some senders put in a header (X-Gitlab-Token).
UNKEPT_HEADER = re.compile(r"authorization|cookie|token|secret|password|passwd|api[-_]?key|private[-_]?key|credential", re.I)
_INSERT_ATTEMPTS = 3
# A delivery this small whose mapping is cached is received on the event loop: parsing and mapping it
# costs less than handing it to a thread. Larger ones are parsed in the thread pool.
_INLINE_DELIVERY_BYTES = 16 * 1024


class Deletable(Protocol):
    """Which events a deletion would erase (read side): rows with ``nid`` and ``event_source``."""

    def matching(self, event_type: str, window: Any, up_to: int) -> Sequence[Mapping[str, Any]]: ...


class RawIds:
    """``evt_<unix-nanoseconds>``, strictly increasing within the process (two at one instant differ)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self, now_ns: int) -> str:
        with self._lock:
            self._last = max(now_ns, self._last + 1)
            return f"evt_{self._last}"


class Counter(Protocol):
    """A count several processes share (``web.workers.SharedVersion``)."""

    def __call__(self) -> int: ...

    def bump(self) -> None: ...


class MappingCache:
    """Mappings in force, each kept for ``ttl`` seconds after it was read from the log.

    A change made through this process clears the cache before it is answered,
    so it holds for the very next webhook; so does one made through another
    worker of the same ``chainloom serve``, which moves the ``changes`` count
    they share (an entry is kept only while that count stands still). One made
    by another server is seen within ``ttl`` (the reference runtime waited up
    to 3 s). ``POST /sync`` clears it too. A generation counter keeps a read
    that raced with a change from storing what it read before the change.
    """

    def __init__(
        self,
        load: Callable[[str], MappingConfig | None],
        ttl: float = 1.0,
        max_entries: int = 10_000,
        changes: Counter | None = None,
    ) -> None:
        self._load = load
        self._ttl = ttl
        self._max_entries = max_entries
        self._changes = changes
        self._entries: dict[str, tuple[MappingConfig | None, float, int]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def _changed(self) -> int:
        return self._changes() if self._changes is not None else 0

    def fresh(self, path: str) -> tuple[bool, MappingConfig | None]:
        """``(True, mapping)`` when the cache holds ``path`` (None: no mapping), without reading the log."""
        entry = self._entries.get(path)
        if entry is not None and time.monotonic() - entry[1] < self._ttl and entry[2] == self._changed():
            return True, entry[0]
        return False, None

    def get(self, path: str) -> MappingConfig | None:
        known, config = self.fresh(path)
        if known:
            return config
        now = time.monotonic()
        generation, changed = self._generation, self._changed()
        config = self._load(path)
        with self._lock:
            if generation == self._generation:
                if len(self._entries) >= self._max_entries:
                    self._entries.clear()
                self._entries[path] = (config, now, changed)
        return config

    def clear(self) -> None:
        """Forget every mapping read, here and in the processes sharing ``changes``."""
        with self._lock:
            self._generation += 1
            self._entries.clear()
        if self._changes is not None:
            self._changes.bump()


def parse_payload(body: bytes) -> dict[str, Any]:
    """A webhook body: one JSON object, whatever the Content-Type says (422 otherwise)."""
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise Unprocessable(f"invalid JSON payload: {error}") from None
    if not isinstance(value, dict):
        raise Unprocessable(f"invalid JSON payload: expected a JSON object, got {type(value).__name__}")
    try:
        check_storable(value, "payload")
    except Unprocessable as error:
        raise Unprocessable(f"invalid JSON payload: {error.message}", param=error.param) from None
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers as a raw event keeps them: one value per name (repeats joined), no credentials.

    Header bytes that are not UTF-8 reach us as unpaired surrogates: such a delivery is refused (422).
    """
    kept: dict[str, str] = {}
    for name, value in headers.items():
        if UNKEPT_HEADER.search(name):
            continue
        kept[name] = f"{kept[name]}, {value}" if name in kept else value
    check_storable(kept, "headers")
    return kept


# Answers echo what the client sent only while it is small: past this, the data it sent is left out.
ECHO_MAX_BYTES = 64 * 1024


def trim_echo(answer: Json, size: int, *fields: str) -> Json:
    """``answer`` without ``fields`` when what they echo (``size`` bytes) is larger than ECHO_MAX_BYTES."""
    if size <= ECHO_MAX_BYTES:
        return answer
    return {key: value for key, value in answer.items() if key not in fields}


def _raw_answer(raw_id: str, nid: int, received_at: str, path: str, headers: dict, payload: dict) -> Json:
    raw: Json = {"id": raw_id, "nid": nid, "received_at": received_at, "path": path, "payload": payload}
    if headers:
        raw["headers"] = headers
    return raw


def ingest_answer(event: Json, raw: Json) -> Json:
    """What ``POST /ingest`` answers: the contract's ``eventstore_Event`` of the appended event, plus
    what clients of the reference runtime read from its answer (the raw event's ``path``, ``payload``,
    ``received_at``, ``headers``) and ``raw_id``/``raw_nid`` (what ``/replay`` takes)."""
    answer = event | {"path": raw["path"], "received_at": raw["received_at"], "payload": raw["payload"]}
    if "headers" in raw:
        answer["headers"] = raw["headers"]
    return answer | {"raw_id": raw["id"], "raw_nid": raw["nid"]}


@dataclass
class _Delivery:
    """A webhook delivery made ready to keep: its raw payload, and the event its mapping made (if any)."""

    now: int
    path: str
    kept: dict[str, str]
    payload: dict[str, Any]
    raw_id: str
    event: ExternalEvent | None = None
    appended: list[StoredEvent] = field(default_factory=list)
    failure: DomainError | None = None


@dataclass
class _Refused:
    """A delivery refused before its payload could be kept (``kept``: the record of the refusal, if any)."""

    refusal: DomainError
    kept: list[StoredEvent] = field(default_factory=list)


class EventSourceCommands:
    def __init__(
        self,
        runner: CommandRunner,
        writer: LogWriter,
        log: EventLog,
        run_blocking: RunBlocking,
        wait_for: Callable[[int | None], Awaitable[None]],
        deletable: Deletable,
        secrets: SecretBox | None,
        clock: Callable[[], int] | None = None,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        mapping_changes: Counter | None = None,
    ) -> None:
        """``mapping_changes``: counted by every worker of one ``chainloom serve`` (their mapping caches)."""
        self._runner = runner
        self._log = log
        self._run_blocking = run_blocking
        self._wait_for = wait_for
        self._deletable = deletable
        self._secrets = secrets
        self._clock = clock or (lambda: time.time_ns())  # looked up per call, so tests can pin it
        self._new_id = new_id
        self._raw_ids = RawIds()
        # Appends arriving together share a transaction (see infra.logwriter).
        self._writer = writer
        self._mappings = MappingCache(self._mapping_in_log, changes=mapping_changes)

    # -- the log -------------------------------------------------------------

    def _stored(
        self, aggregates: Sequence[Aggregate], ctx: CommandContext, *, size_limited: bool = True
    ) -> list[StoredEvent]:
        metadata, mapper = ctx.metadata(), self._log.mapper
        return [
            mapper.to_stored_event(e, metadata, size_limited=size_limited) for a in aggregates for e in a.collect_events()
        ]

    async def _answer(self, outcome: Any, position: int | None) -> Any:
        """Wait until the read models show ``position``, then return the result or raise the refusal."""
        await self._wait_for(position)
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    # -- POST /events --------------------------------------------------------

    async def append_event(
        self,
        *,
        event_id: str,
        created_at_ns: int | None,
        event_type: str,
        event_source: str,
        aggregate_type: str,
        aggregate_id: str,
        version: int,
        data: Any,
        metadata: Any,
    ) -> Json:
        """Append an event a client states; its ``id`` (if empty) and ``nid`` are assigned here."""
        now = self._clock()
        event = ExternalEvent(
            id=event_id or self._new_id(),
            created_at_ns=now if created_at_ns is None else created_at_ns,
            event_type=event_type,
            event_source=event_source,
            aggregate_type=aggregate_type,
            aggregate_id=aggregate_id,
            version=version,
            data=data,
            metadata=metadata,
        )
        event.validate(now)
        stored = self._log.mapper.to_stored_external(event)
        try:
            positions = await self._writer.append([stored])
        except RecordConflictError:
            raise Conflict(f"libdb: unique constraint violation: event '{event.id}' is already recorded") from None
        await self._wait_for(positions[0])
        answer = event.envelope(format_ns(event.created_at_ns)) | {"nid": positions[0]}
        return trim_echo(answer, len(stored.state), "data", "metadata")

    # -- raw events and ingest -----------------------------------------------

    async def record_raw_event(
        self,
        *,
        raw_id: str,
        received_at_ns: int | None,
        path: str,
        headers: dict[str, str],
        payload: Any,
        ctx: CommandContext,
    ) -> Json:
        """Keep a raw event as given (``POST /raw-events``): nothing is mapped."""
        if not path:
            raise Unprocessable("missing required field: path is required", param="path")
        if payload is None:
            raise Unprocessable("missing required field: payload is required", param="payload")
        received_at = format_ns(self._clock() if received_at_ns is None else received_at_ns)
        raw_id = raw_id or self._new_id()
        stored = self._stored([RawEvent.receive(raw_id, received_at, path, headers, payload)], ctx)
        try:
            positions = await self._writer.append(stored)
        except RecordConflictError:
            raise Conflict(f"libdb: unique constraint violation: raw event '{raw_id}' is already recorded") from None
        await self._wait_for(positions[0])
        answer = _raw_answer(raw_id, positions[0], received_at, path, headers, payload)
        return trim_echo(answer, len(stored[0].state), "payload")

    async def ingest(self, path: str, body: bytes, headers: Mapping[str, str], ctx: CommandContext) -> Json:
        """``POST /ingest``: verify the signature (if the mapping asks for one), keep the raw payload,
        then append the event the mapping makes of it (see ``ingest_answer``)."""
        known, config = self._mappings.fresh(path)
        if known and len(body) <= _INLINE_DELIVERY_BYTES:  # no read, little work: no thread hand-off
            delivery = self._receive(config, path, body, headers, ctx)
        else:
            delivery = await self._run_blocking(self._read_and_receive, path, body, headers, ctx)
        if isinstance(delivery, _Refused):
            position = max(await self._writer.append(delivery.kept)) if delivery.kept else None
            return await self._answer(delivery.refusal, position)
        outcome, position = await self._keep(delivery, len(body), ctx)
        return await self._answer(outcome, position)

    def _read_and_receive(
        self, path: str, body: bytes, headers: Mapping[str, str], ctx: CommandContext
    ) -> _Delivery | _Refused:
        return self._receive(self._mappings.get(path), path, body, headers, ctx)

    def _receive(
        self, config: MappingConfig | None, path: str, body: bytes, headers: Mapping[str, str], ctx: CommandContext
    ) -> _Delivery | _Refused:
        """Everything about a delivery under its mapping that needs no write: signature, payload, event."""
        now = self._clock()
        if ctx.signature_required and (config is None or not config.signature_scheme):
            # No key, and no signature that could stand in for it: nothing is kept.
            return _Refused(Unauthorized("missing API key: send it in the X-API-Key header, or sign the delivery"))
        if config is not None and config.signature_scheme:
            try:
                self._verify(config, body, headers, now)
            except Unauthorized as refusal:
                digest = hashlib.sha256(body).hexdigest()
                rejection = WebhookDelivery.reject(self._new_id(), path, refusal.message, format_ns(now), len(body), digest)
                return _Refused(refusal, self._stored([rejection], ctx))
        payload = parse_payload(body)
        kept = kept_headers(headers)
        delivery = _Delivery(now, path, kept, payload, self._raw_ids(now))  # the raw id before the event's
        if config is None:
            delivery.failure = NotFound(
                f"failed to ingest event: failed to get mapping for path {path}: mapping not found: serverops: not found"
            )
            return delivery
        try:
            delivery.event = self._map(
                config,
                payload,
                kept,
                now,
                f"failed to ingest event: failed to apply mapping for path {path}",
                "failed to ingest event: failed to append event",
            )
            delivery.appended = [self._log.mapper.to_stored_external(delivery.event)]
        except Unprocessable as error:
            delivery.failure = error
        except TooLarge as error:  # like a mapping that cannot be applied: the payload is kept
            delivery.failure, delivery.event = error, None
        return delivery

    async def _keep(self, delivery: _Delivery, size: int, ctx: CommandContext) -> tuple[Json | DomainError, int]:
        """Store the raw payload and the mapped event together; the payload alone if the event is refused."""
        now, raw_id, failure = delivery.now, delivery.raw_id, delivery.failure
        for attempt in range(_INSERT_ATTEMPTS):
            if attempt:
                raw_id = self._raw_ids(now)
            # The raw payload's size was bounded when it was read (CHAINLOOM_INGEST_MAX_BYTES).
            receipt = self._stored(
                [RawEvent.receive(raw_id, format_ns(now), delivery.path, delivery.kept, delivery.payload)],
                ctx,
                size_limited=False,
            )
            try:
                positions = await self._writer.append(receipt + delivery.appended)
            except RecordConflictError:
                if not delivery.appended:
                    continue  # the raw id was taken (by another process): take the next one
                try:
                    positions = await self._writer.append(receipt)  # keep the payload all the same
                except RecordConflictError:
                    continue
                assert delivery.event is not None  # something was appended: the mapping made an event
                failure = Conflict(
                    "failed to ingest event: failed to append event: libdb: unique constraint violation:"
                    f" event '{delivery.event.id}' is already recorded"
                )
            if failure is not None:
                return failure, max(positions)
            assert delivery.event is not None  # no failure: the mapping made an event
            raw = _raw_answer(raw_id, positions[0], format_ns(now), delivery.path, delivery.kept, delivery.payload)
            answer = ingest_answer(delivery.event.envelope(format_ns(now)) | {"nid": positions[1]}, raw)
            return trim_echo(answer, size, "payload", "data"), max(positions)
        raise Conflict("failed to ingest event: no free raw event id; try again")

    def _map(
        self,
        config: MappingConfig,
        payload: dict,
        headers: Mapping[str, str],
        now: int,
        apply_prefix: str,
        append_prefix: str,
    ) -> ExternalEvent:
        """The event the mapping makes of a payload, checked as any appended event is."""
        try:
            event = apply_mapping(config, payload, headers, now, lambda: self._raw_ids(now))
        except Unprocessable as error:
            raise Unprocessable(f"{apply_prefix}: {error.message}", param=error.param) from None
        try:
            event.validate(now)
        except Unprocessable as error:
            raise Unprocessable(f"{append_prefix}: {error.message}", param=error.param) from None
        return event

    def _mapping_in_log(self, path: str) -> MappingConfig | None:
        """The mapping in force: every mapping event but Deleted carries the whole configuration,
        so the latest one is read (fresh across processes, without replaying the aggregate)."""
        latest = self._log.last_event(EventMapping, path)
        if latest is None or isinstance(latest, EventMapping.Deleted):
            return None
        return MappingConfig.from_state(latest.config)

    def _verify(self, config: MappingConfig, body: bytes, headers: Mapping[str, str], now_ns: int) -> None:
        try:
            secret = self._open(config.sealed_secret)
        except SecretsUnavailable as error:
            raise Unauthorized(f"the mapping's signature secret cannot be used ({error}); set it again") from None
        verify(config.signature_scheme, secret, config.header_name, body, headers, now_ns // 1_000_000_000)

    def _open(self, sealed: str) -> str:
        if self._secrets is None:
            raise SecretsUnavailable("no secrets key is configured (CHAINLOOM_SECRETS_KEY)")
        return self._secrets.open(sealed)

    # -- POST /replay --------------------------------------------------------

    async def replay(self, nid: int, from_ns: int, to_ns: int) -> tuple[int, str]:
        """Map a kept raw event again with the current mapping, appending a new event; its position and type."""
        event = await self._run_blocking(self._remap, nid, from_ns, to_ns)
        try:
            positions = await self._writer.append([self._log.mapper.to_stored_external(event)])
        except RecordConflictError:
            raise Conflict(
                "failed to replay event: failed to append replayed domain event: libdb: unique constraint violation:"
                f" event '{event.id}' is already recorded"
            ) from None
        await self._wait_for(positions[0])
        return positions[0], event.event_type

    def _remap(self, nid: int, from_ns: int, to_ns: int) -> ExternalEvent:
        """The event the current mapping makes of the raw event at ``nid``."""
        found = self._log.read(after=nid - 1, limit=1) if nid > 0 else []
        raw = found[0] if found else None
        if (
            raw is None
            or raw["nid"] != nid
            or raw["event_type"] != RAW_EVENT_RECEIVED
            or raw["event_source"] != INTERNAL_EVENT_SOURCE
            or not from_ns <= parse_ns(raw["data"]["receivedAt"]) <= to_ns
        ):
            raise NotFound(
                f"failed to replay event: failed to get raw event (nid={nid}): not found: raw event not found"
            )
        data = raw["data"]
        config = self._mappings.get(data["path"])
        if config is None:
            raise NotFound(
                f"failed to replay event: failed to get mapping for path {data['path']}: mapping not found:"
                " serverops: not found"
            )
        now = self._clock()
        return self._map(
            config,
            data["payload"],
            data["headers"],
            now,
            f"failed to replay event: failed to apply mapping to raw event (nid={nid}, path={config.path})",
            "failed to replay event: failed to append replayed domain event",
        )

    # -- mappings ------------------------------------------------------------

    async def create_mapping(self, config: MappingConfig, secret: str | None, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            sealed = self._sealed(config, secret, None)
            mapping = log.get(EventMapping, config.path) if config.path else None
            if mapping is None:
                mapping = EventMapping.create(sealed)
            else:
                mapping.recreate(sealed)
            return Decision(None, [mapping])

        await self._changed_mapping(decide, ctx)

    async def update_mapping(self, config: MappingConfig, secret: str | None, ctx: CommandContext) -> None:
        """A full replacement; an omitted ``signatureSecret`` keeps the one set before (if the scheme stays)."""

        def decide(log: Aggregates) -> Decision[None]:
            mapping = log.get(EventMapping, config.path)
            if mapping is None:
                raise NotFound("not found: mapping not found")
            mapping.ensure_exists()
            mapping.update(self._sealed(config, secret, mapping.config))
            return Decision(None, [mapping])

        await self._changed_mapping(decide, ctx)

    async def delete_mapping(self, path: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            mapping = log.get(EventMapping, path)
            if mapping is None:
                raise NotFound("not found: mapping not found")
            mapping.delete()
            return Decision(None, [mapping])

        await self._changed_mapping(decide, ctx)

    async def _changed_mapping(self, decide: Decide[None], ctx: CommandContext) -> None:
        try:
            await self._runner.run(decide, ctx)
        finally:
            self._mappings.clear()

    def sync_mappings(self) -> None:
        """``POST /sync``: forget the mappings read so far (the next webhook reads them again)."""
        self._mappings.clear()

    def _sealed(self, config: MappingConfig, secret: str | None, existing: MappingConfig | None) -> MappingConfig:
        if not config.signature_scheme:
            return replace(config, sealed_secret="")
        if secret is not None:
            replace(config, sealed_secret="(to be sealed)").validate()  # a bad configuration is told first
            check_secret(config.signature_scheme, secret)
            if self._secrets is None:
                raise Unprocessable(
                    "webhook signature secrets need a key: set CHAINLOOM_SECRETS_KEY", param="signatureSecret"
                )
            return replace(config, sealed_secret=self._secrets.seal(secret))
        if existing is not None and existing.sealed_secret:
            return replace(config, sealed_secret=existing.sealed_secret)
        return replace(config, sealed_secret="")  # validation names the missing secret

    # -- DELETE /events/type ---------------------------------------------------

    async def delete_events(self, event_type: str, window: Any, ctx: CommandContext) -> None:
        """Erase external events (and raw events) of a type in a window; refuse aggregates' events."""
        head = await self._run_blocking(self._log.head)
        await self._wait_for(head)  # the index then holds every event up to head
        position = await self._run_blocking(self._delete_events, event_type, window, head, ctx)
        await self._wait_for(position)

    def _delete_events(self, event_type: str, window: Any, head: int, ctx: CommandContext) -> int:
        rows = self._deletable.matching(event_type, window, head)
        if event_type not in ERASABLE_INTERNAL_TYPES and any(
            r["event_source"] == INTERNAL_EVENT_SOURCE for r in rows
        ):
            raise Forbidden(
                f"events of type '{event_type}' in this window include chainloom's own events,"
                " which aggregates are rebuilt from: they cannot be deleted"
            )
        audit = EventDeletion.record(
            self._new_id(), event_type, format_ns(window.from_ns), format_ns(window.to_ns), head, len(rows)
        )
        return max(erase(self._log, [r["nid"] for r in rows], self._stored([audit], ctx)))
