"""What an operator does about a faulted projection: see it, retry it, or skip its poison event.

These run in any process (``chainloom projections status|retry|skip``); a
running server or projector worker reads the faults with the positions in
each batch, so it resumes without a restart. A skip is audited on the log
(``projection.event_skipped``) before the projection moves past the event, and
remembered in the read store so a rebuild skips the event too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from eventsourcing.persistence import IntegrityError

from chainloom.domain.projection_audit import SkippedProjectionEvent
from chainloom.infra.eventlog import EventLog
from chainloom.infra.bootstrap import open_resources
from chainloom.infra.readstore import Fault, ReadStore
from chainloom.infra.settings import Settings
from chainloom.projections.base import create_tables
from chainloom.projections.rebuild import chosen_projectors
from chainloom.queries.operator import ProjectionState, projection_states

OPERATOR_METADATA = {"actor": "operator", "request_id": "cli", "correlation_id": "cli"}


class NotFaulted(Exception):
    """The projection has no fault to retry or skip."""


@contextmanager
def _stores(settings: Settings) -> Iterator[tuple[EventLog, ReadStore]]:
    with open_resources(settings) as resources:
        with resources.store.transaction() as cursor:
            create_tables(resources.store, cursor, [])  # the fault records, if no server has run yet
        yield resources.log, resources.store


def status(settings: Settings) -> list[ProjectionState]:
    """Each projection's position, the log's head, and its fault if it has one (as ``GET /projections``)."""
    with _stores(settings) as (log, store):
        return projection_states(store, log)


def retry(settings: Settings, name: str) -> Fault:
    """Clear the projection's fault: it tries the poison event again. Returns the fault cleared."""
    chosen_projectors([name])
    with _stores(settings) as (_, store):
        return clear_fault(store, name)


def skip(settings: Settings, name: str) -> Fault:
    """Audit the skip on the log, move the projection past its poison event and clear the fault."""
    chosen_projectors([name])
    with _stores(settings) as (log, store):
        fault = fault_of(store, name)
        try:
            log.save(skip_audit(fault), metadata=OPERATOR_METADATA)
        except IntegrityError:
            pass  # audited already by a skip that stopped before moving the projection on
        pass_over(store, fault)
    return fault


# -- the store's part, for any process with its own log and read store (also ``POST /projections/…``) --------


def fault_of(store: ReadStore, name: str) -> Fault:
    """The projection's fault; ``NotFaulted`` when it has none."""
    with store.transaction(commit=False) as cursor:
        fault = store.faults(cursor, [name]).get(name)
    if fault is None:
        raise NotFaulted(f"projection {name} is not faulted")
    return fault


def clear_fault(store: ReadStore, name: str) -> Fault:
    """A retry: clear the projection's fault (its runner tries the event again); the fault cleared."""
    with store.transaction() as cursor:
        store.lock_projections(cursor)
        fault = store.faults(cursor, [name]).get(name)
        if fault is None:
            raise NotFaulted(f"projection {name} is not faulted")
        store.clear_fault(cursor, name)
    return fault


def skip_audit(fault: Fault) -> SkippedProjectionEvent:
    """The record of a skip on the log (``projection.event_skipped``), saved before the projection moves on."""
    return SkippedProjectionEvent.record(
        fault.projection, fault.position, fault.event_id, fault.event_type, fault.error
    )


def pass_over(store: ReadStore, fault: Fault) -> None:
    """The rest of a skip, once audited: move the projection past the event, remember it, clear the fault.
    ``NotFaulted`` when the projection is no longer stopped there (retried, or skipped by someone else)."""
    name = fault.projection
    with store.transaction() as cursor:
        store.lock_projections(cursor)
        current = store.faults(cursor, [name]).get(name)
        if current is None or current.position != fault.position:
            raise NotFaulted(f"projection {name} is no longer stopped at event {fault.position}")
        position = store.positions(cursor, [name])[name]
        if position < fault.position:
            store.set_position(cursor, name, fault.position)
        store.record_skip(cursor, name, fault.position)
        store.clear_fault(cursor, name)
