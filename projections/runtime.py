"""Read model of the backends' observed state: the latest state recorded per backend (``backend_state.*``).

One row per tracked backend; a ``dropped`` backend loses its row. The lists are
kept as the events carry them (JSON text), answered as they are. It lives in the
read store beside the catalog and is projected by the same runner, so query
results joining both (``GET /backends``) are stamped by the same version.
"""

from __future__ import annotations

import json

from chainloom.domain.backend_state import ObservedBackend
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


class RuntimeProjector(Projector):
    name = "runtime"
    tables = ("backend_states",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {backend_states} ("
        " backend_id TEXT PRIMARY KEY, models TEXT NOT NULL, pulled_models TEXT NOT NULL, error TEXT NOT NULL,"
        " observed_at BIGINT NOT NULL)",
    )

    @on(ObservedBackend.ModelsChanged, ObservedBackend.ErrorRaised, ObservedBackend.ErrorCleared)
    def observed(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "INSERT INTO {backend_states} (backend_id, models, pulled_models, error, observed_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (backend_id) DO UPDATE SET models = excluded.models,"
            " pulled_models = excluded.pulled_models, error = excluded.error, observed_at = excluded.observed_at",
            (
                event["aggregate_id"],
                json.dumps(data["models"], separators=(",", ":"), ensure_ascii=False),
                json.dumps(data["pulledModels"], separators=(",", ":"), ensure_ascii=False),
                data["error"],
                parse_ns(event["created_at"]),
            ),
        )

    @on(ObservedBackend.Dropped)
    def dropped(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {backend_states} WHERE backend_id = ?", (event["aggregate_id"],))
