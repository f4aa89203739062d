"""Read models of the event source: every event of the log, raw events, ingest mappings.

``event_index`` holds *every* envelope of the log — internal and external —
so ``/events/type?event_type=backend.created`` lists backend creations. It is
the one projector that reads external events; the handlers below, like every
projector's, only see chainloom's own events (raw-event receipts, mapping
changes, the audit of deletions).
"""

from __future__ import annotations

import json
from typing import Any

from chainloom.domain.eventsource.events import INTERNAL_EVENT_SOURCE, RAW_EVENT_RECEIVED, EventDeletion, RawEvent
from chainloom.domain.eventsource.mappings import EventMapping
from chainloom.domain.uniqueness import BOOKKEEPING_AGGREGATE_TYPES
from chainloom.infra.readstore import SqlCursor
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


def mapping_json(state: dict[str, Any]) -> dict[str, Any]:
    """A mapping's stored configuration → the contract's ``MappingConfig`` (the sealed secret stays out)."""
    return {
        "path": state["path"],
        "eventType": state["event_type"],
        "eventSource": state["event_source"],
        "aggregateType": state["aggregate_type"],
        "aggregateIDField": state["aggregate_id_field"],
        "aggregateTypeField": state["aggregate_type_field"],
        "eventTypeField": state["event_type_field"],
        "eventSourceField": state["event_source_field"],
        "eventIDField": state["event_id_field"],
        "version": state["version"],
        "versionField": state["version_field"],
        "metadataMapping": state["metadata_mapping"] or {},
        "signatureScheme": state["signature_scheme"],
        "signatureHeader": state["signature_header"],
        "signatureSecretSet": bool(state["sealed_secret"]),
    }


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class EventSourceProjector(Projector):
    name = "eventsource"
    tables = ("event_index", "raw_events", "event_mappings")
    schema = (
        "CREATE TABLE IF NOT EXISTS {event_index} ("
        " nid BIGINT PRIMARY KEY, created_at BIGINT NOT NULL, event_type TEXT NOT NULL,"
        " event_source TEXT NOT NULL, aggregate_type TEXT NOT NULL, aggregate_id TEXT NOT NULL,"
        " version BIGINT NOT NULL, envelope TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {event_index_type} ON {event_index} (event_type, created_at)",
        "CREATE INDEX IF NOT EXISTS {event_index_source} ON {event_index} (event_type, event_source, created_at)",
        "CREATE INDEX IF NOT EXISTS {event_index_aggregate}"
        " ON {event_index} (event_type, aggregate_type, aggregate_id, created_at)",
        "CREATE INDEX IF NOT EXISTS {event_index_created} ON {event_index} (created_at)",
        "CREATE TABLE IF NOT EXISTS {raw_events} ("
        " nid BIGINT PRIMARY KEY, id TEXT NOT NULL, received_at BIGINT NOT NULL, recorded_at BIGINT NOT NULL,"
        " path TEXT NOT NULL, headers TEXT NOT NULL, payload TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {raw_events_received} ON {raw_events} (received_at)",
        "CREATE TABLE IF NOT EXISTS {event_mappings} (path TEXT PRIMARY KEY, config TEXT NOT NULL)",
    )

    def apply(self, cursor: SqlCursor | TemplatedCursor, event: Event) -> None:
        cursor = self.templated(cursor)
        if event["aggregate_type"] in BOOKKEEPING_AGGREGATE_TYPES and event["event_source"] == INTERNAL_EVENT_SOURCE:
            return  # uniqueness claims: on the log and Kafka for audit, not in the public event API
        envelope = {k: v for k, v in event.items() if k != "nid"}
        cursor.execute(
            "INSERT INTO {event_index} (nid, created_at, event_type, event_source, aggregate_type, aggregate_id,"
            " version, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event["nid"],
                parse_ns(event["created_at"]),
                event["event_type"],
                event["event_source"],
                event["aggregate_type"],
                event["aggregate_id"],
                event["version"],
                _dumps(envelope),
            ),
        )
        super().apply(cursor, event)

    @on(RawEvent.Received)
    def raw_event_received(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "INSERT INTO {raw_events} (nid, id, received_at, recorded_at, path, headers, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                event["nid"],
                event["aggregate_id"],
                parse_ns(data["receivedAt"]),
                parse_ns(event["created_at"]),
                data["path"],
                _dumps(data["headers"]),
                _dumps(data["payload"]),
            ),
        )

    @on(EventMapping.Created, EventMapping.Recreated, EventMapping.Updated)
    def mapping_saved(self, cursor: TemplatedCursor, event: Event) -> None:
        config = event["data"]["config"]
        cursor.execute("DELETE FROM {event_mappings} WHERE path = ?", (config["path"],))
        cursor.execute(
            "INSERT INTO {event_mappings} (path, config) VALUES (?, ?)", (config["path"], _dumps(mapping_json(config)))
        )

    @on(EventMapping.Deleted)
    def mapping_deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {event_mappings} WHERE path = ?", (event["aggregate_id"],))

    @on(EventDeletion.Recorded)
    def events_deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        """Forget what the deletion erased from the log: the same type, window and positions."""
        data = event["data"]
        window = (parse_ns(data["fromTime"]), parse_ns(data["toTime"]), data["upToNid"])
        cursor.execute(
            "DELETE FROM {event_index} WHERE event_type = ? AND created_at >= ? AND created_at <= ? AND nid <= ?",
            (data["eventType"], *window),
        )
        if data["eventType"] == RAW_EVENT_RECEIVED:
            cursor.execute(
                "DELETE FROM {raw_events} WHERE recorded_at >= ? AND recorded_at <= ? AND nid <= ?", window
            )
