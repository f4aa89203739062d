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
from eventsourcing.utils import get_topic, register_topic, resolve_topic

import chainloom.domain
from chainloom.domain.base import event_type_name, split_stream_id
from chainloom.domain.errors import TooLarge, Unprocessable
from chainloom.domain.eventsource.events import INTERNAL_EVENT_SOURCE, ExternalEvent
from chainloom.domain.storable import check_storable, printable, text_problem
from chainloom.infra.timefmt import format_datetime, format_ns, from_ns, parse_ns

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "INTERNAL_EVENT_SOURCE", "EnvelopeMapper", "event_type_name"]

# Largest stored event (its JSON envelope), as EventStoreDB's and Kafka's defaults.
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024

_BASE_ATTRIBUTES = ("originator_id", "originator_version", "timestamp", "originator_topic")


# Logs written before chainloom was installed as one package name their event classes by the
# old top-level module ("domain.backends:Backend.Created"): those topics resolve to the same classes.
register_topic("domain", chainloom.domain)


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


class EnvelopeMapper(Mapper[str]):
    """Also the log's last guard: no event leaves here that a store or a reader could not take
    back (``domain.storable``), nor one larger than ``max_event_bytes`` (413), so a request
    refused here has written nothing. The web layer checks input earlier, with its own names."""

    def __init__(
        self, new_event_id: Callable[[], str] = lambda: str(uuid4()), max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    ) -> None:
        super().__init__(transcoder=JSONTranscoder())
        self._new_event_id = new_event_id
        self.max_event_bytes = max_event_bytes

    def _state(self, envelope: dict[str, Any], originator_id: str, internal: bool, size_limited: bool) -> bytes:
        """The stored bytes of an envelope, refused when the log could not hold them."""
        text = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
        try:
            state = text.encode()
        except UnicodeEncodeError:  # a lone surrogate somewhere
            state = b""
        # NUL is written as the escape \u0000; a hit may be a false alarm (an escaped backslash before "u0000").
        if not state or b"\\u0000" in state or text_problem(originator_id):
            if internal:  # name a field as the client sent it (data keys are the request's)
                check_storable(envelope["data"], "")
                check_storable(envelope["metadata"], "metadata")
            else:
                check_storable(envelope, "")
            if text_problem(originator_id):
                raise Unprocessable(f"invalid identifier {printable(originator_id)!r}: {text_problem(originator_id)}")
        if size_limited and len(state) > self.max_event_bytes:
            raise TooLarge(
                f"the event would be {len(state)} bytes; events are limited to {self.max_event_bytes} bytes"
                " (CHAINLOOM_MAX_EVENT_BYTES)"
            )
        return state

    def to_stored_event(
        self, domain_event: Any, metadata: Mapping[str, Any] | None = None, *, size_limited: bool = True
    ) -> StoredEvent:
        """``size_limited=False`` for records whose size is bounded elsewhere (a webhook's raw payload)."""
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
            topic=get_topic(type(domain_event)),  # the library caches topics by class
            state=self._state(envelope, domain_event.originator_id, True, size_limited),
        )

    def to_stored_external(self, event: ExternalEvent) -> StoredEvent:
        """An external event (POST /events, ingest, replay), stored as it was stated.

        Its stream is named after its identity and holds only it (version 1):
        the same identity twice collides in the store; nothing else does.
        """
        envelope = event.envelope(format_ns(event.created_at_ns))
        return StoredEvent(
            originator_id=event.stream_id,
            originator_version=1,
            topic=get_topic(ExternalEvent),
            state=self._state(envelope, event.stream_id, False, True),
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
