"""Read model of the cloud providers' configurations: the sealed key and its masked hint, never the key."""

from __future__ import annotations

from chainloom.domain.providers import ProviderConfig
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


class ProvidersProjector(Projector):
    name = "providers"
    tables = ("provider_configs",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {provider_configs} ("
        " type TEXT PRIMARY KEY, sealed_key TEXT NOT NULL, key_hint TEXT NOT NULL,"
        " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {provider_configs_created} ON {provider_configs} (created_at, type)",
    )

    @on(ProviderConfig.Configured, ProviderConfig.Reconfigured)
    def configured(self, cursor: TemplatedCursor, event: Event) -> None:
        data, at = event["data"], parse_ns(event["created_at"])
        # Configured again while configured (upsert): the row keeps its createdAt.
        cursor.execute(
            "INSERT INTO {provider_configs} (type, sealed_key, key_hint, created_at, updated_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (type) DO UPDATE SET sealed_key = excluded.sealed_key, key_hint = excluded.key_hint,"
            " updated_at = excluded.updated_at",
            (event["aggregate_id"], data["sealedKey"], data["keyHint"], at, at),
        )

    @on(ProviderConfig.ConfigDeleted)
    def deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {provider_configs} WHERE type = ?", (event["aggregate_id"],))
