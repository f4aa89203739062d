"""Drop read models and build them again from position 0 (``chainloom projections rebuild``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from infra.eventlog import EventLog
from infra.readstore import open_read_store
from infra.settings import Settings
from projections.registry import all_projectors
from projections.runner import ProjectionRunner


def projector_names() -> list[str]:
    return [p.name for p in all_projectors()]


def rebuild(
    settings: Settings,
    names: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Rebuild the named read models (all when None); ``progress(position, head)``. Returns the position reached."""
    names = list(names or projector_names())
    unknown = sorted(set(names) - set(projector_names()))
    if unknown:
        raise ValueError(f"unknown projection(s): {', '.join(unknown)}; known: {', '.join(projector_names())}")
    log = EventLog(settings.event_store_env())
    store, store_factory = open_read_store(settings.read_store_env())
    try:
        runner = ProjectionRunner(log, store, all_projectors(), run_blocking=_not_async)
        head = log.head()
        return runner.rebuild(names, progress=(lambda position: progress(position, head)) if progress else None)
    finally:
        log.close()
        store_factory.close()


async def _not_async(*_args, **_kwargs):  # pragma: no cover - the rebuild only uses the blocking API
    raise RuntimeError("rebuild runs without an event loop")
