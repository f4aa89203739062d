"""What the event source records: external events, raw-event receipts, and audits.

External events (``POST /events``, ingest, replay) are facts other systems
state; chainloom checks them and stores them as they are. Their identity is
(``id``, ``event_type``, ``event_source``, UTC day of ``created_at``): each is
stored in a stream of its own named after that identity, at version 1, so two
external events never collide because they carry the same aggregate id and
version, while the same identity twice does (→ 409).

Raw events, deletions and refused webhook deliveries are chainloom's own
records (``event_source`` ``chainloom``), written as one-event aggregates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property, lru_cache
from typing import Any

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate, public_event_type
from chainloom.domain.errors import Unprocessable
from chainloom.domain.storable import check_storable

# The source of every event chainloom records itself. Reserved: an external
# event may not claim it, so read models that trust internal events cannot be
# fed forged ones (a client posting its own `backend.created`).
INTERNAL_EVENT_SOURCE = "chainloom"

# How far an appended event's created_at may be from the server's clock.
CLOCK_SKEW_NS = 10 * 60 * 1_000_000_000
_DAY_NS = 86_400 * 1_000_000_000

# Longest raw-event id: it is part of a stream id, which the store indexes.
MAX_RAW_ID_LENGTH = 256
# Versions are 64-bit signed integers (as in the reference runtime and the read models).
MAX_VERSION = 2**63 - 1


def utc_day(ns: int) -> str:
    """The UTC day (``YYYYMMDD``) of a time in nanoseconds since the epoch."""
    return _day_text(ns // _DAY_NS)


@lru_cache(maxsize=1024)
def _day_text(day: int) -> str:  # every append computes one; the days of a burst are one or two
    return datetime.fromtimestamp(day * 86_400, tz=timezone.utc).strftime("%Y%m%d")


@dataclass(frozen=True)
class ExternalEvent:
    """An event stated by another system, as it is appended to the log (``nid`` comes from the store)."""

    id: str
    created_at_ns: int
    event_type: str
    event_source: str
    aggregate_type: str
    aggregate_id: str
    version: int
    data: Any = field(default_factory=dict)
    metadata: Any = field(default_factory=dict)

    def validate(self, now_ns: int, *, check_clock: bool = True) -> None:
        """Refuse what the log must not hold; the first failure wins (messages are the reference's)."""
        if not self.event_type:
            raise Unprocessable("missing required field: event_type is required", param="event_type")
        if not self.aggregate_id:
            raise Unprocessable("missing required field: aggregate_id is required", param="aggregate_id")
        if not self.aggregate_type:
            raise Unprocessable("missing required field: aggregate_type is required", param="aggregate_type")
        if self.version <= 0:
            raise Unprocessable("invalid parameter: version must be greater than 0", param="version")
        if self.version > MAX_VERSION:
            raise Unprocessable(f"invalid parameter: version must be at most {MAX_VERSION}", param="version")
        for name in ("id", "event_type", "event_source", "aggregate_type", "aggregate_id"):
            check_storable(getattr(self, name), name)
        if self.event_source == INTERNAL_EVENT_SOURCE:
            raise Unprocessable(
                f"invalid parameter: event_source '{INTERNAL_EVENT_SOURCE}' is reserved for chainloom's own events",
                param="event_source",
            )
        if check_clock and self.created_at_ns < now_ns - CLOCK_SKEW_NS:
            raise Unprocessable("event is too old", param="created_at")
        if check_clock and self.created_at_ns > now_ns + CLOCK_SKEW_NS:
            raise Unprocessable("event is too new", param="created_at")

    @property
    def identity(self) -> tuple[str, str, str, str]:
        return (self.id, self.event_type, self.event_source, utc_day(self.created_at_ns))

    @cached_property
    def stream_id(self) -> str:
        """``event:<sha256 of the identity>``: one stream per identity, of bounded length."""
        digest = hashlib.sha256(json.dumps(self.identity, ensure_ascii=False).encode()).hexdigest()
        return f"event:{digest}"

    def envelope(self, created_at: str) -> dict[str, Any]:
        """The public shape without ``nid``; ``created_at`` formatted by the caller (RFC 3339 UTC)."""
        return {
            "id": self.id,
            "created_at": created_at,
            "event_type": self.event_type,
            "event_source": self.event_source,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "version": self.version,
            "data": self.data,
            "metadata": self.metadata,
        }


class RawEvent(Aggregate):
    """A webhook payload as it was received, kept so it can be mapped again (``/replay``)."""

    aggregate_type = "raw_event"

    class Received(Aggregate.Created):
        received_at: str
        path: str
        headers: dict[str, str]
        payload: dict[str, Any]

    @classmethod
    def receive(
        cls, raw_id: str, received_at: str, path: str, headers: dict[str, str], payload: dict[str, Any]
    ) -> RawEvent:
        if not path:
            raise Unprocessable("missing required field: path is required", param="path")
        if not raw_id:
            raise Unprocessable("missing required field: id is required", param="id")
        if len(raw_id) > MAX_RAW_ID_LENGTH:
            raise Unprocessable(f"invalid parameter: id longer than {MAX_RAW_ID_LENGTH} characters", param="id")
        check_storable(raw_id, "id")
        check_storable(path, "path")
        return cls._create(
            cls.Received, id=cls.stream_id(raw_id), received_at=received_at, path=path, headers=headers, payload=payload
        )

    @event(Received)
    def __init__(self, received_at: str, path: str, headers: dict[str, str], payload: dict[str, Any]) -> None:
        self.received_at = received_at
        self.path = path
        self.headers = headers
        self.payload = payload


# Public type of the receipt of a raw event (``raw_event.received``).
RAW_EVENT_RECEIVED = public_event_type(RawEvent.Received)

# Internal event types that may be erased (DELETE /events/type): they record
# data that came from outside, not the state an aggregate is rebuilt from.
ERASABLE_INTERNAL_TYPES = frozenset({RAW_EVENT_RECEIVED})


class EventDeletion(Aggregate):
    """The audit of a ``DELETE /events/type``: what was erased, never the erased data."""

    aggregate_type = "event_deletion"

    class Recorded(Aggregate.Created):
        event_type: str
        from_time: str
        to_time: str
        up_to_nid: int
        count: int

    @classmethod
    def record(
        cls, deletion_id: str, event_type: str, from_: str, to: str, up_to_nid: int, count: int
    ) -> EventDeletion:
        return cls._create(
            cls.Recorded,
            id=cls.stream_id(deletion_id),
            event_type=event_type,
            from_time=from_,
            to_time=to,
            up_to_nid=up_to_nid,
            count=count,
        )

    @event(Recorded)
    def __init__(self, event_type: str, from_time: str, to_time: str, up_to_nid: int, count: int) -> None:
        self.event_type = event_type
        self.from_time = from_time
        self.to_time = to_time
        self.up_to_nid = up_to_nid
        self.count = count


EVENTS_DELETED = public_event_type(EventDeletion.Recorded)


class WebhookDelivery(Aggregate):
    """A delivery to ``/ingest`` refused because its signature did not verify (the payload is not kept)."""

    aggregate_type = "webhook_delivery"

    class Rejected(Aggregate.Created):
        path: str
        reason: str
        received_at: str
        body_bytes: int
        body_sha256: str

    @classmethod
    def reject(
        cls, delivery_id: str, path: str, reason: str, received_at: str, body_bytes: int, body_sha256: str
    ) -> WebhookDelivery:
        return cls._create(
            cls.Rejected,
            id=cls.stream_id(delivery_id),
            path=path,
            reason=reason,
            received_at=received_at,
            body_bytes=body_bytes,
            body_sha256=body_sha256,
        )

    @event(Rejected)
    def __init__(
        self, path: str, reason: str, received_at: str, body_bytes: int, body_sha256: str
    ) -> None:
        self.path = path
        self.reason = reason
        self.received_at = received_at
        self.body_bytes = body_bytes
        self.body_sha256 = body_sha256
