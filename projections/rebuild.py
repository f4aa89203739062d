"""Build read models again from position 0, aside, and swap them in when complete (``chainloom projections rebuild``).

The live read models keep serving while the rebuild runs: the new rows go to
fresh tables under suffixed names, tracked under a suffixed name. Only when
they have reached the log's end are they swapped in, in one transaction that
holds the projection lock (so a running server's batches wait, then go on
from the swapped-in position): catch the fresh tables up to the log's head,
drop the live tables, rename the fresh tables and their indexes, set the live
position. A failure on the way — a projector raising on an event, a lost
connection — drops the fresh tables and leaves the live read models, their
positions and their faults as they were. Events an operator skipped
(``chainloom projections skip``) are skipped again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from chainloom.infra.eventlog import EventLog
from chainloom.infra.bootstrap import open_resources
from chainloom.infra.readstore import ReadStore
from chainloom.infra.settings import Settings
from chainloom.infra.vectors import VectorStore
from chainloom.projections.activity import DEFAULT_RETENTION
from chainloom.projections.base import Projector, create_tables
from chainloom.projections.registry import all_projectors
from chainloom.projections.runner import ProjectionRunner

logger = logging.getLogger(__name__)

REBUILD_SUFFIX = "_rebuild"


def projector_names() -> list[str]:
    return [p.name for p in all_projectors()]


def chosen_projectors(
    names: Sequence[str] | None, vectors: VectorStore | None = None, activity_retention: int = DEFAULT_RETENTION
) -> list[Projector]:
    """The named projectors (all when None or empty); ``ValueError`` naming the unknown ones."""
    wanted = list(names or projector_names())
    unknown = sorted(set(wanted) - set(projector_names()))
    if unknown:
        raise ValueError(f"unknown projection(s): {', '.join(unknown)}; known: {', '.join(projector_names())}")
    return [p for p in all_projectors(vectors, activity_retention) if p.name in wanted]


def rebuild(
    settings: Settings,
    names: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Rebuild the named read models (all when None); ``progress(position, head)``. Returns the position reached.

    Raises ``projections.runner.ProjectionFailed`` (or the store's error) when the rebuild fails; the live
    read models are then untouched."""
    vectors = VectorStore(settings.vector_directory)
    live = chosen_projectors(names, vectors, settings.activity_retention)
    with open_resources(settings) as resources:
        position = rebuild_aside(resources.log, resources.store, live, progress)
    vectors.wait_for_maintenance()  # the rebuilt vectors compacted (and indexed) before the process ends
    return position


def rebuild_aside(
    log: EventLog, store: ReadStore, live: Sequence[Projector], progress: Callable[[int, int], None] | None = None
) -> int:
    fresh = [projector.aside(REBUILD_SUFFIX) for projector in live]
    with store.transaction() as cursor:
        create_tables(store, cursor, [])  # the fault and skip records, on a store no server has opened yet
    with store.transaction() as cursor:
        store.lock_projections(cursor)  # first: SQLite's write lock must be taken before anything is read
        for projector in fresh:
            projector.drop(cursor)  # left by a rebuild that was killed
            store.reset(cursor, projector.name)
        create_tables(store, cursor, fresh)
        skipped = {aside.name: store.skipped(cursor, projector.name) for projector, aside in zip(live, fresh)}
    runner = ProjectionRunner(log, store, fresh, record_faults=False, skipped=skipped)
    try:
        head = log.head()
        runner.catch_up(progress=(lambda position: progress(position, head)) if progress else None)
        with store.transaction() as cursor:
            position = runner.catch_up_in(cursor)  # holds the projection lock until the swap commits
            for projector, aside in zip(live, fresh):
                _swap(store, cursor, projector, aside, position)
        logger.info("rebuilt %s up to position %d", ", ".join(p.name for p in live), position)
        return position
    except BaseException:
        with store.transaction() as cursor:
            store.lock_projections(cursor)
            for projector in fresh:
                projector.drop(cursor)
                store.reset(cursor, projector.name)
        raise
    finally:
        for projector in live:
            projector.tidy(store)  # what the swapped-out (or the dropped) tables named outside the store


def _swap(store: ReadStore, cursor, live: Projector, aside: Projector, position: int) -> None:
    """In the caller's transaction: the aside tables become the live ones, at ``position``, without a fault."""
    live.drop(cursor)
    for old, new in zip(aside.table_names(), live.table_names()):
        store.rename_table(cursor, old, new)
    for index in live.index_names():
        store.rename_index(cursor, aside.sql(f"{{{index}}}"), index, live.index_statement(index))
    store.reset(cursor, aside.name)
    store.set_position(cursor, live.name, position)
    store.clear_fault(cursor, live.name)
