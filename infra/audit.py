"""Who changed an aggregate, when, under which request (``chainloom audit who <type>/<id>``).

Every event chainloom appends carries who asked and under which request in its
metadata (``commands.base.CommandContext``: ``actor`` — a user's id, ``api-key``,
``system`` for start-up work, ``webhook`` —, ``request_id``, the request's
``X-Request-ID``, and ``correlation_id``). The history of one of chainloom's
aggregates is its stream in the log (``<type>:<id>``), read by the log's own
index, so the answer is exact and current. External events (``POST /events``,
``/ingest``) each live in a stream of their own: for an aggregate chainloom has
no stream of, those stating it are found through the event index read model (as
far as it has got), and their actor and request id are whatever their sender
stated (the output says so). Erased events (GDPR deletion) are gone from both.

Output: one line per change in log order — position, time, event type, actor,
request id — as a table, or with ``--json`` one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import Any, TextIO

import orjson

from chainloom.infra.bootstrap import open_resources
from chainloom.infra.envelope import INTERNAL_EVENT_SOURCE
from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import ReadStore
from chainloom.infra.settings import Settings

COLUMNS = ("nid", "created_at", "event_type", "actor", "request_id")
HEADINGS = ("POSITION", "TIME", "EVENT", "ACTOR", "REQUEST")


def parse_aggregate(text: str) -> tuple[str, str]:
    """``backend/3f2a…`` → ``("backend", "3f2a…")`` (the id may hold slashes); ``ValueError`` otherwise."""
    aggregate_type, _, aggregate_id = text.partition("/")
    if not aggregate_type or not aggregate_id:
        raise ValueError(f"name the aggregate as TYPE/ID (e.g. backend/3f2a…), not {text!r}")
    return aggregate_type, aggregate_id


def changes(log: EventLog, store: ReadStore | None, aggregate_type: str, aggregate_id: str) -> list[dict[str, Any]]:
    """Each change of the aggregate, in log order: the public event's position, time, type, source and version,
    with the actor, request id and correlation id of its metadata (None where it has none).

    One of chainloom's aggregates is its stream alone: an external event naming the same type and id is a
    client's statement, not a change of it, and must not put a client-stated actor into its history. Only
    an aggregate chainloom has no stream of is looked up among the external events (``store`` given)."""
    events = list(_own_events(log, f"{aggregate_type}:{aggregate_id}"))
    if not events and store is not None:
        events = sorted(_stated_events(store, aggregate_type, aggregate_id), key=lambda event: event["nid"])
    return [_change(event) for event in events]


def _own_events(log: EventLog, stream_id: str) -> Iterable[dict[str, Any]]:
    """The stream of one of chainloom's aggregates, with positions (by the log's index of streams)."""
    with log.transaction(commit=False) as cursor:
        cursor.execute(
            f"SELECT {log.position_column} AS nid, state FROM {log.events_table}"
            " WHERE originator_id = ? ORDER BY originator_version",
            (stream_id,),
        )
        rows = cursor.fetchall()
    for row in rows:
        event = orjson.loads(bytes(row["state"]))
        if event.get("event_source") == INTERNAL_EVENT_SOURCE:
            event["nid"] = row["nid"]
            yield event


def _stated_events(store: ReadStore, aggregate_type: str, aggregate_id: str) -> Iterable[dict[str, Any]]:
    """External events stating this aggregate, from the event index read model."""
    with store.transaction(commit=False) as cursor:
        if "event_index" not in store.relations(cursor):
            return
        cursor.execute(
            "SELECT nid, envelope FROM event_index WHERE aggregate_type = ? AND aggregate_id = ? AND event_source <> ?",
            (aggregate_type, aggregate_id, INTERNAL_EVENT_SOURCE),
        )
        rows = cursor.fetchall()
    for row in rows:
        event = json.loads(row["envelope"])
        event["nid"] = row["nid"]
        yield event


def _change(event: dict[str, Any]) -> dict[str, Any]:
    metadata = event.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    return {
        "nid": event["nid"],
        "created_at": event["created_at"],
        "event_type": event["event_type"],
        "event_source": event["event_source"],
        "version": event["version"],
        "actor": metadata.get("actor"),
        "request_id": metadata.get("request_id"),
        "correlation_id": metadata.get("correlation_id"),
    }


def write_table(rows: list[dict[str, Any]], out: TextIO) -> None:
    cells = [HEADINGS, *([_cell(row[column]) for column in COLUMNS] for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    for line in cells:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() + "\n")


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def who_command(args: argparse.Namespace, settings: Settings) -> int:
    """``chainloom audit who TYPE/ID [--json]``: exit 0, or 1 when the aggregate has no event, 2 for a bad name."""
    try:
        aggregate_type, aggregate_id = parse_aggregate(args.aggregate)
    except ValueError as error:
        print(f"chainloom: {error}", file=sys.stderr)
        return 2
    with open_resources(settings) as resources:
        rows = changes(resources.log, resources.store, aggregate_type, aggregate_id)
    if not rows:
        print(f"chainloom: no event of {aggregate_type}/{aggregate_id} in the log", file=sys.stderr)
        return 1
    if any(row["event_source"] != INTERNAL_EVENT_SOURCE for row in rows):
        print(
            f"chainloom: {aggregate_type}/{aggregate_id} is not one of chainloom's aggregates: these are external"
            " events, their actor and request id as their sender stated them",
            file=sys.stderr,
        )
    if args.json:
        for row in rows:
            sys.stdout.write(json.dumps(row, ensure_ascii=False) + "\n")
    else:
        write_table(rows, sys.stdout)
    return 0
