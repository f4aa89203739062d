"""The log by position: every event after a given ``nid``, in log order, filtered, for audit and replay tools.

``GET /log``, ``GET /log/stream`` (``web/log.py``) and ``chainloom log tail`` read here, straight from
the log (not from a read model): what they answer is what the log holds, whatever a projector did
with it. Events come in the public shape of ``/events`` with their ``nid``, as stored — sealed
secrets stay the ciphertext they were stored as (a provider's ``sealedKey``, a mapping's
``sealedSecret``), exactly as ``/events`` and Kafka carry them; nothing is masked, so the events
read here are the ones the hash chain seals. Unlike ``/events``, the log's bookkeeping (the
uniqueness claims of logs written before the index of unique values) is not left out: every
position that holds an event is answered, so a gap in ``nid`` is an erasure (or, on PostgreSQL, a
rolled-back append), never a hidden event.

Filters (``LogFilter``) apply here, server-side, in Python over each decoded event. A filtered
read looks at most at ``scan_limit`` events and returns the position it stopped at (``next``),
matches or not, so a client resumes from there even when nothing matched: a filter never makes a
request cost more than one bounded scan.

Everything here blocks: the web layer calls it through its thread pool.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from chainloom.infra.eventlog import EventLog
from chainloom.infra.settings import Settings

Event = dict[str, Any]

# Events looked at per request by a filtered read, by default (CHAINLOOM_LOG_SCAN_LIMIT).
SCAN_LIMIT = 10_000
# Events read from the store at a time while scanning.
READ_CHUNK = 1_000
# Seconds between two looks at the log's head by `chainloom log tail -f`.
FOLLOW_POLL = 0.5


@dataclass(frozen=True)
class LogFilter:
    """Which events a read keeps; every field empty (the default) keeps them all.

    ``type_prefix``: ``event_type`` starts with it; ``source``: ``event_source`` equals it;
    ``aggregate_type`` (and ``aggregate_id`` unless None): the aggregate; ``actor``: ``metadata.actor``
    equals it (internal events record the caller there; an external event only if its sender did).
    """

    type_prefix: str = ""
    source: str = ""
    aggregate_type: str = ""
    aggregate_id: str | None = None
    actor: str = ""

    @classmethod
    def parse(
        cls,
        type_prefix: str | None = None,
        source: str | None = None,
        aggregate: str | None = None,
        actor: str | None = None,
    ) -> LogFilter:
        """From the query values (``aggregate`` as ``TYPE`` or ``TYPE/ID``: the id is everything after the
        first ``/``, so it may contain more of them). Empty values are absent. ``ValueError`` naming the
        problem for an aggregate without a type or with an empty id (``/ID``, ``TYPE/``)."""
        aggregate_type, aggregate_id = "", None
        if aggregate:
            aggregate_type, slash, rest = aggregate.partition("/")
            if not aggregate_type or (slash and not rest):
                raise ValueError(f"invalid aggregate {aggregate!r}: expected TYPE or TYPE/ID")
            aggregate_id = rest if slash else None
        return cls(type_prefix or "", source or "", aggregate_type, aggregate_id, actor or "")

    def __bool__(self) -> bool:
        """Whether it leaves anything out."""
        return bool(self.type_prefix or self.source or self.aggregate_type or self.actor)

    def accepts(self, event: Event) -> bool:
        if self.type_prefix and not str(event.get("event_type", "")).startswith(self.type_prefix):
            return False
        if self.source and event.get("event_source") != self.source:
            return False
        if self.aggregate_type:
            if event.get("aggregate_type") != self.aggregate_type:
                return False
            if self.aggregate_id is not None and event.get("aggregate_id") != self.aggregate_id:
                return False
        if self.actor:
            metadata = event.get("metadata")
            if not isinstance(metadata, dict) or metadata.get("actor") != self.actor:
                return False
        return True


NO_FILTER = LogFilter()


def _read(log: EventLog, after: int, limit: int, until: int | None = None) -> list[Event]:
    """Public events with ``after`` < nid (≤ ``until``), in log order, at most ``limit``."""
    notifications = log.recorder.select_notifications(start=after, limit=limit, stop=until, inclusive_of_start=False)
    return [log.mapper.to_public(notification) for notification in notifications]


def read_log(
    log: EventLog, after: int, limit: int, filters: LogFilter = NO_FILTER, scan_limit: int = SCAN_LIMIT
) -> tuple[list[Event], int]:
    """At most ``limit`` events after ``after`` that ``filters`` accepts, in log order, looking at no more
    than ``scan_limit`` events (unfiltered: exactly ``limit``); and the position to read after next.

    That position is the last event answered when ``limit`` were found, else the last event looked at
    (``after`` when there was none: the log ends there). A client that passes it back as ``after``
    misses nothing and gets nothing twice; it has read everything once it reaches the log's head.
    """
    if not filters:
        events = _read(log, after, limit)
        return events, events[-1]["nid"] if events else after
    found: list[Event] = []
    position, budget = after, max(scan_limit, 1)
    while budget > 0:
        wanted = min(READ_CHUNK, budget)
        chunk = _read(log, position, wanted)
        for event in chunk:
            position = event["nid"]
            if filters.accepts(event):
                found.append(event)
                if len(found) == limit:
                    return found, position
        budget -= len(chunk)
        if len(chunk) < wanted:
            break  # the end of the log
    return found, position


@dataclass(frozen=True)
class LogPage:
    """One answer of ``GET /log``: the events, where to go on (``next``), and the log's head when read."""

    events: list[Event]
    next: int
    head: int

    def json(self) -> dict[str, Any]:
        return {"events": self.events, "next": self.next, "head": self.head}


def read_page(
    log: EventLog, after: int, limit: int, filters: LogFilter = NO_FILTER, scan_limit: int = SCAN_LIMIT
) -> LogPage:
    """``read_log`` with the head read after it, so ``next`` ≤ ``head`` unless ``after`` was beyond it."""
    events, position = read_log(log, after, limit, filters, scan_limit)
    return LogPage(events, position, log.head())


def last_events(log: EventLog, count: int, filters: LogFilter = NO_FILTER, until: int | None = None) -> list[Event]:
    """The last ``count`` events ``filters`` accepts up to position ``until`` (the head when None), in log
    order (read backwards, a window at a time)."""
    if count <= 0:
        return []
    windows: list[list[Event]] = []
    found, high = 0, log.head() if until is None else until
    while high > 0 and found < count:
        low = max(0, high - READ_CHUNK)
        # At most READ_CHUNK positions lie in (low, high], so one read gets them all.
        window = [event for event in _read(log, low, READ_CHUNK, until=high) if filters.accepts(event)]
        windows.append(window)
        found += len(window)
        high = low
    events = [event for window in reversed(windows) for event in window]
    return events[-count:]


def follow(
    log: EventLog,
    after: int,
    filters: LogFilter = NO_FILTER,
    poll: float = FOLLOW_POLL,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[Event]]:
    """Batches of events after ``after`` as they are appended, forever: what is there first, then whatever
    comes, looking at the head every ``poll`` seconds (an empty batch between two looks that found nothing)."""
    while True:
        events, position = read_log(log, after, READ_CHUNK, filters)
        after = position
        if events:
            yield events
        if position < log.head():
            continue  # more to read (or to scan past) already
        yield []
        sleep(poll)


def _line(event: Event) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False) + "\n"


# The pause between two looks of `tail -f` (a test replaces it).
_sleep: Callable[[float], None] = time.sleep


def tail_command(args: argparse.Namespace, settings: Settings) -> int:
    """``chainloom log tail [-f] [-n N] [--after NID] [--type P] [--source S] [--aggregate T[/ID]] [--actor A]``.

    One JSON line per event on standard output: the last ``N`` events (default 10) that the filters keep,
    or with ``--after`` every one after that position; with ``-f`` then those appended later, until
    interrupted (Ctrl-C ends with status 0). Reads the store the settings name, not a running service.
    """
    from chainloom.infra.bootstrap import open_resources

    try:
        filters = LogFilter.parse(args.type_prefix, args.source, args.aggregate, args.actor)
    except ValueError as error:
        print(f"chainloom: {error}", file=sys.stderr)
        return 2
    if args.lines < 0 or (args.after is not None and args.after < 0):
        print("chainloom: -n and --after take a non-negative number", file=sys.stderr)
        return 2
    out = sys.stdout
    try:
        with open_resources(settings, read_store=False) as resources:
            log = resources.log
            after = args.after
            if after is None:
                after = log.head()
                out.writelines(_line(event) for event in last_events(log, args.lines, filters, until=after))
                out.flush()
                if not args.follow:
                    return 0
            # What comes after: what is there now (--after), then, with -f, what is appended later.
            for batch in follow(log, after, filters, sleep=_sleep):
                if batch:
                    out.writelines(_line(event) for event in batch)
                    out.flush()
                elif not args.follow:
                    break
    except KeyboardInterrupt:
        out.flush()
        return 0
    except BrokenPipeError:  # `chainloom log tail | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 0
    return 0
