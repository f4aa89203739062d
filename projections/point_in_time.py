"""Read models as they stood at a point in the past, built aside (``chainloom projections rebuild --until … --into DIR``).

An auditor asks "what did the catalog look like before that change" with the
same API: the log up to a position is copied into a new data directory
(``infra.log_transfer.copy_log``: the events with their positions and ids, and
what lives beside them), every read model is built there from it, and
``chainloom serve --read-only --data-dir DIR`` answers from them. The live log,
read models and blobs are only read: nothing of theirs changes.

**The directory** gets the embedded layout (``Settings.in_data_dir``): the SQLite
log ``events.sqlite``, the read store ``views.sqlite``, the vectors, and
``blobs/`` with the content of the files the copy names — hard links to the live
directory's blobs where it can (content-addressed files are never rewritten in
place, so a link is a copy that costs nothing and outlives the live sweeper), a
copy otherwise (another device; a PostgreSQL blob store). Content swept from
the live store before the copy is missing there too: the CLI says how many.
Secrets are not copied: the copy has a key of its own, so it can mask sealed
keys (their hints are in the events) but open none; nor are password hashes
(a read-only service signs nobody in). The hash chain's seals come along, so
``GET /log/digest`` and ``audit verify`` work on the copy. A directory whose log or
read store holds anything is refused, so a copy is never mixed with another.

**Until a time.** Positions are exact; a time is resolved to a position. Only
chainloom's own events are stamped by the service's clock as they are
appended; an external event's ``created_at`` is what its client stated (within
the clock-skew window for ``POST /events``, anything for a replay), so it says
nothing about when it was recorded. A time T therefore means: the log up to
the last chainloom event stamped at or before T, before the first one stamped
after it (the log is cut as a prefix, whatever the stamps of different
processes' clocks do). External events recorded after that last chainloom
event are left out — nothing proves they were recorded by T; give a position
to include them. Resolving reads the log from its start (about 10⁶ events a
few seconds): the log has no index by time.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from chainloom.infra import credentials
from chainloom.infra.blobs import DatabaseBlobs, DirectoryBlobs
from chainloom.infra.bootstrap import open_resources
from chainloom.infra.envelope import INTERNAL_EVENT_SOURCE
from chainloom.infra.eventlog import EventLog
from chainloom.infra.readstore import ReadStore, open_read_store
from chainloom.infra.settings import Settings
from chainloom.infra.timefmt import format_ns, parse_ns
from chainloom.infra.vectors import VectorStore
from chainloom.projections.rebuild import chosen_projectors, projector_names
from chainloom.projections.runner import ProjectionRunner

logger = logging.getLogger(__name__)

# Events read at a time while a time is resolved to a position.
RESOLVE_BATCH = 10_000


class PointInTimeRefused(ValueError):
    """The request cannot be carried out as asked (exit status 2): nothing was written."""


@dataclass(frozen=True)
class Until:
    """Where the copy ends: ``position`` (included), and how it was found, for the operator."""

    position: int
    described: str


@dataclass(frozen=True)
class PointInTime:
    position: int  # the read models stand here
    events: int  # events copied
    blobs: int  # blobs the copied files name that were brought along
    missing_blobs: int  # … that the live store no longer has


def resolve_until(log: EventLog, until: str) -> Until:
    """``until`` (a position, or an RFC 3339 time) → the last position to copy. ``PointInTimeRefused`` when
    it is neither, or a position past the log's head."""
    text = until.strip()
    head = log.head()
    if text.isdigit():
        position = int(text)
        if position > head:
            raise PointInTimeRefused(f"--until {position} is past the log's head ({head})")
        return Until(position, f"position {position}")
    try:
        moment = parse_ns(text)
    except ValueError:
        raise PointInTimeRefused(f"--until takes a position (nid) or an RFC 3339 time, not {until!r}") from None
    position, stamp = position_at(log, moment)
    if position == 0:
        return Until(0, f"{format_ns(moment)}: before the log's first event of chainloom's own")
    return Until(position, f"{format_ns(moment)}: position {position}, the last event recorded by then (at {stamp})")


def position_at(log: EventLog, moment_ns: int) -> tuple[int, str]:
    """The position of the last chainloom event stamped at or before ``moment_ns`` that comes before the first
    one stamped after it (0 if none), and its stamp (see the module's docstring)."""
    position, stamp, after = 0, "", 0
    while True:
        notifications = log.recorder.select_notifications(start=after, limit=RESOLVE_BATCH, inclusive_of_start=False)
        for notification in notifications:
            envelope = orjson.loads(notification.state)
            if envelope["event_source"] != INTERNAL_EVENT_SOURCE:
                continue
            if parse_ns(envelope["created_at"]) > moment_ns:
                return position, stamp
            position, stamp = notification.id, envelope["created_at"]
        if len(notifications) < RESOLVE_BATCH:
            return position, stamp
        after = notifications[-1].id


def rebuild_into(
    settings: Settings,
    until: str,
    into: Path,
    names: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    resolved: Callable[[Until], None] | None = None,
) -> PointInTime:
    """Copy the live log up to ``until`` into the data directory ``into`` and build the read models there
    (the named ones; all when None). ``progress(position, last)`` while building; ``resolved(until)`` once
    the position is known. ``PointInTimeRefused`` (nothing written) for a bad request or a directory in use;
    the store's or a projector's error (``ProjectionFailed``) if the build fails."""
    from chainloom.infra.log_transfer import copy_log  # the transfer helper's module, imported when used

    made = not into.exists()
    target = settings.in_data_dir(into)
    if not settings.uses_postgres and _same_directory(settings.data_dir, into):
        raise PointInTimeRefused(f"{into} is the live data directory: choose another")
    if not settings.uses_postgres and not (settings.data_dir / "events.sqlite").exists():
        raise PointInTimeRefused(f"there is no log in {settings.data_dir} (CHAINLOOM_DATA_DIR) to copy from")
    chosen = list(names or projector_names())
    _refuse_used(target)
    vectors = VectorStore(target.vector_directory)
    try:
        projectors = chosen_projectors(chosen, vectors)  # the unknown named before anything is written
    except ValueError as error:
        raise PointInTimeRefused(str(error)) from None
    try:
        with open_resources(settings, read_store=False) as live:
            point = resolve_until(live.log, until)
            if resolved is not None:
                resolved(point)
            skipped = _skipped(settings, chosen)
            with open_resources(target) as copy:
                if copy.log.head() or _tracked(copy.store):
                    raise PointInTimeRefused(f"{into} already holds a store: remove it or choose another directory")
                events = copy_log(live.log, copy.log, point.position)
                _forget_passwords(copy.log)
                runner = ProjectionRunner(copy.log, copy.store, projectors, record_faults=False, skipped=skipped)
                runner.setup()
                position = runner.catch_up(
                    progress=(lambda reached: progress(reached, point.position)) if progress else None
                )
                blobs, missing = _bring_blobs(settings, live.log, copy.store, target)
        vectors.wait_for_maintenance()  # the vectors compacted (and indexed) before the process ends
    except BaseException:
        if made:  # a directory this build made: nothing half-built is left behind (else: remove it to try again)
            shutil.rmtree(into, ignore_errors=True)
        raise
    logger.info("read models at position %d built into %s (%d events copied)", position, into, events)
    return PointInTime(position, events, blobs, missing)


def _forget_passwords(log: EventLog) -> None:
    """The copy came with the password hashes (``copy_log`` carries what lives beside the log): a copy is read,
    and a read-only service signs nobody in, so they are dropped rather than handed to whoever reads the copy."""
    log.ensure_tables(credentials.SCHEMA)
    with log.transaction() as cursor:
        cursor.execute(f"DELETE FROM {credentials.TABLE}")


def _same_directory(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _refuse_used(target: Settings) -> None:
    """Refuse a directory whose log or read store holds anything, before anything is opened (or created) there."""
    for name in ("events.sqlite", "views.sqlite"):
        path = target.data_dir / name
        if path.exists() and path.stat().st_size > 0:
            raise PointInTimeRefused(
                f"{target.data_dir} already holds a store ({name}): remove it or choose another directory"
            )


def _tracked(store: ReadStore) -> bool:
    """Whether a projection has tracked a position in ``store`` (the library tracks its own migration too)."""
    names = projector_names()
    marks = ", ".join("?" for _ in names)
    return bool(store.query(f"SELECT 1 FROM {store.tracking_table} WHERE application_name IN ({marks})", names))


def _skipped(settings: Settings, names: Sequence[str]) -> dict[str, frozenset[int]]:
    """The events an operator skipped for the live read models (``chainloom projections skip``): skipped here
    too, as a rebuild does. Read from the live read store, which is not otherwise touched."""
    store, factory = open_read_store(settings.read_store_env())
    try:
        with store.transaction(commit=False) as cursor:
            if "projection_skips" not in store.relations(cursor):
                return {}
            return {name: store.skipped(cursor, name) for name in names}
    finally:
        factory.close()


def _bring_blobs(settings: Settings, live_log: EventLog, copied: ReadStore, target: Settings) -> tuple[int, int]:
    """The content of every file the copy's read model names, into the copy's blob directory: (brought, missing).
    The live blob store is only read (not even ``ensure``d: that would sweep its uploads)."""
    with copied.transaction(commit=False) as cursor:
        if "files" not in copied.relations(cursor):
            return 0, 0
    digests = [row["hash"] for row in copied.query("SELECT DISTINCT hash FROM files WHERE hash <> ''")]
    into = DirectoryBlobs(target.blob_directory)
    into.ensure()
    source: DirectoryBlobs | DatabaseBlobs
    source = DatabaseBlobs(live_log) if settings.blob_store == "database" else DirectoryBlobs(settings.blob_directory)
    brought = missing = 0
    for digest in digests:
        if not source.exists(digest):
            missing += 1
            continue
        if isinstance(source, DirectoryBlobs):
            _link_or_copy(source.path_of(digest), into.path_of(digest))
        else:
            reader, writer = source.open(digest), into.writer()
            try:
                while chunk := reader.read():
                    writer.write(chunk)
            except BaseException:
                writer.abort()
                raise
            finally:
                reader.close()
            if writer.finish()[0] != digest:
                raise RuntimeError(f"blob {digest} read back with another hash")
        brought += 1
    return brought, missing


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except FileExistsError:
        pass
    except OSError:  # another device, or links not allowed there
        shutil.copyfile(source, target)


def rebuild_into_command(args: argparse.Namespace, settings: Settings) -> int:
    """``chainloom projections rebuild --until <nid|time> --into <dir> [NAME …]``."""
    from tqdm import tqdm

    if not args.until:
        print("chainloom: --into needs --until <position|RFC 3339 time>: the point in time to build", file=sys.stderr)
        return 2
    into = Path(args.into)
    bar = tqdm(unit="event", desc=f"building read models into {into}")

    def resolved(until: Until) -> None:
        bar.write(f"until {until.described}", file=sys.stderr)

    def progress(position: int, last: int) -> None:
        bar.total = last
        bar.update(position - bar.n)

    try:
        point = rebuild_into(settings, args.until, into, args.names or None, progress, resolved)
    except PointInTimeRefused as error:
        bar.close()
        print(f"chainloom: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        bar.close()
        left = f"; remove what it left in {into} before trying again" if into.exists() else ""
        print(f"chainloom: the build into {into} failed (the live store is unchanged{left}): {error}", file=sys.stderr)
        return 1
    bar.close()
    print(f"copied {point.events} events into {into}; read models built there at position {point.position}")
    if point.blobs or point.missing_blobs:
        print(
            f"file contents: {point.blobs} brought along"
            + (f", {point.missing_blobs} no longer in the live blob store" if point.missing_blobs else "")
        )
    print(f"serve them: chainloom serve --read-only --data-dir {into}")
    return 0
