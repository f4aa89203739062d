"""Queries of the download queue read model (``projections.downloads``): what is queued or pulling."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chainloom.domain.downloads import ACTIVE_STATES
from chainloom.infra.readstore import ReadStore, Row
from chainloom.infra.timefmt import format_ns

Json = dict[str, Any]

_COLUMNS = "id, backend_id, base_url, model, state, error, queued_at, changed_at"


@dataclass(frozen=True)
class DownloadRow:
    key: str  # the aggregate's key (backend id / model)
    backend_id: str
    base_url: str
    model: str
    state: str
    error: str
    queued_at: int  # ns: when it was last queued
    changed_at: int  # ns: its last event

    @classmethod
    def of(cls, row: Row) -> DownloadRow:
        return cls(
            row["id"], row["backend_id"], row["base_url"], row["model"], row["state"], row["error"],
            row["queued_at"], row["changed_at"],
        )


def job_json(row: DownloadRow) -> Json:
    """A queued download as the reference's download job (``downloadservice.Job``): its id is the backend's URL."""
    return {
        "id": row.base_url,
        "taskType": "model_download",
        "modelJob": {"url": row.base_url, "model": row.model},
        "scheduledFor": 0,
        "validUntil": 0,
        "createdAt": format_ns(row.queued_at),
    }


class DownloadQueue:
    """Blocking reads of the queue, for commands (on the writer thread or through the pool) and the job."""

    def __init__(self, store: ReadStore) -> None:
        self._store = store

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[DownloadRow]:
        return [DownloadRow.of(r) for r in self._store.query(f"SELECT {_COLUMNS} FROM downloads WHERE {sql}", params)]

    def active(self) -> list[DownloadRow]:
        """Queued and running downloads, oldest queued first."""
        return self._rows("state IN (?, ?) ORDER BY queued_at, id", ACTIVE_STATES)

    def of_backend(self, backend_id: str) -> dict[str, DownloadRow]:
        """Every download of the backend (whatever its state), by model."""
        return {row.model: row for row in self._rows("backend_id = ?", (backend_id,))}

    def matching(self, states: Sequence[str], *, model: str | None = None, base_url: str | None = None) -> list[DownloadRow]:
        """Downloads in one of ``states`` of the model, or on the backend at the base URL."""
        marks = ", ".join("?" for _ in states)
        if model is not None:
            return self._rows(f"model = ? AND state IN ({marks})", (model, *states))
        return self._rows(f"base_url = ? AND state IN ({marks})", (base_url, *states))


class DownloadQueries:
    def __init__(self, store: ReadStore, run_blocking: Callable[..., Awaitable[Any]]) -> None:
        self._store = store
        self._run_blocking = run_blocking

    async def queue(self) -> list[Json]:
        """``GET /queue``: the downloads waiting to be pulled, oldest first (not those being pulled)."""
        rows = await self._run_blocking(
            self._store.query,
            f"SELECT {_COLUMNS} FROM downloads WHERE state = ? ORDER BY queued_at, id",
            ("queued",),
        )
        return [job_json(DownloadRow.of(row)) for row in rows]
