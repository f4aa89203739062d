"""The one mapping between domain events, stored events and the public event shape.

Every event in the log is stored as its public envelope — the contract's
``eventstore_Event`` without ``nid``, which is the log position the store
assigns. Internal events get their envelope here; the Kafka relay, the
``/events`` API and the projectors all read envelopes, never domain objects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any
from uuid import uuid4

from eventsourcing.domain import CanInitAggregate
from eventsourcing.persistence import JSONTranscoder, Mapper, Notification, StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from domain.base import split_stream_id
from domain.eventsource.events import INTERNAL_EVENT_SOURCE, ExternalEvent
from infra.timefmt import format_datetime, format_ns, from_ns, parse_ns

__all__ = ["INTERNAL_EVENT_SOURCE", "EnvelopeMapper", "event_type_name"]

_BASE_ATTRIBUTES = ("originator_id", "originator_version", "timestamp", "originator_topic")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


@lru_cache(maxsize=None)
def _camel_cached(name: str) -> str:
    return _camel(name)


@lru_cache(maxsize=None)
def _snake_cached(name: str) -> str:
    return _snake(name)


@lru_cache(maxsize=None)
def _topic(cls: type) -> str:
    return get_topic(cls)


def event_type_name(aggregate_type: str, event_class: type) -> str:
    """``backend`` + ``Backend.Created`` → ``backend.created``; ``BackendAssigned`` → ``backend_assigned``."""
    return f"{aggregate_type}.{_snake_cached(event_class.__name__)}"


class EnvelopeMapper(Mapper[str]):
    def __init__(self, new_event_id: Callable[[], str] = lambda: str(uuid4())) -> None:
        super().__init__(transcoder=JSONTranscoder())
        self._new_event_id = new_event_id

    def to_stored_event(self, domain_event: Any, metadata: Mapping[str, Any] | None = None) -> StoredEvent:
        attributes = vars(domain_event)
        aggregate_type, aggregate_id = split_stream_id(domain_event.originator_id)
        envelope = {
            "id": self._new_event_id(),
            "created_at": format_datetime(domain_event.timestamp),
            "event_type": event_type_name(aggregate_type, type(domain_event)),
            "event_source": INTERNAL_EVENT_SOURCE,
            "aggregate_type": aggregate_type,
            "aggregate_id": aggregate_id,
            "version": domain_event.originator_version,
            "data": {_camel_cached(k): v for k, v in attributes.items() if k not in _BASE_ATTRIBUTES},
            "metadata": dict(metadata or {}),
        }
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=_topic(type(domain_event)),
            state=json.dumps(envelope, separators=(",", ":")).encode(),
        )

    @staticmethod
    def to_stored_external(event: ExternalEvent) -> StoredEvent:
        """An external event (POST /events, ingest, replay), stored as it was stated.

        Its stream is named after its identity and holds only it (version 1):
        the same identity twice collides in the store; nothing else does.
        """
        envelope = event.envelope(format_ns(event.created_at_ns))
        return StoredEvent(
            originator_id=event.stream_id,
            originator_version=1,
            topic=_topic(ExternalEvent),
            state=json.dumps(envelope, separators=(",", ":")).encode(),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        event_class = resolve_topic(stored_event.topic)
        envelope = json.loads(stored_event.state)
        state = {_snake_cached(k): v for k, v in envelope["data"].items()}
        state["originator_id"] = stored_event.originator_id
        state["originator_version"] = stored_event.originator_version
        state["timestamp"] = from_ns(parse_ns(envelope["created_at"]))
        if issubclass(event_class, CanInitAggregate):
            # "pkg.mod:Backend.Created" was created by "pkg.mod:Backend".
            state["originator_topic"] = stored_event.topic.rsplit(".", 1)[0]
        domain_event = object.__new__(event_class)
        object.__setattr__(domain_event, "__dict__", state)
        return domain_event

    @staticmethod
    def to_public(notification: Notification) -> dict[str, Any]:
        """A stored notification → the contract's ``eventstore_Event`` (with ``nid``)."""
        envelope = json.loads(notification.state)
        envelope["nid"] = notification.id
        return envelope
