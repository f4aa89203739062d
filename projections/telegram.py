"""Read model of the Telegram frontends (``telegram``): one row per live frontend, its token only sealed.

The row keeps what reads answer (the token masked: ``queries.telegram``) and
what the bot runtime reads (the sealed token and its digest, the offset).
Times come from the events (``created_at``, the heartbeat they carry), so a
rebuild gives the same rows.
"""

from __future__ import annotations

from chainloom.domain.telegram import ACTIVE, FAILING, TelegramFrontend
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


class TelegramProjector(Projector):
    name = "telegram"
    tables = ("telegram_frontends",)
    schema = (
        "CREATE TABLE IF NOT EXISTS {telegram_frontends} ("
        " id TEXT PRIMARY KEY, user_id TEXT NOT NULL, chat_chain TEXT NOT NULL, description TEXT NOT NULL,"
        " sealed_token TEXT NOT NULL, token_digest TEXT NOT NULL, sync_interval BIGINT NOT NULL,"
        " status TEXT NOT NULL, last_offset BIGINT NOT NULL, last_heartbeat_ns BIGINT, last_error TEXT NOT NULL,"
        " created_at_ns BIGINT NOT NULL, updated_at_ns BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {telegram_frontends_created} ON {telegram_frontends} (created_at_ns, id)",
        "CREATE INDEX IF NOT EXISTS {telegram_frontends_user} ON {telegram_frontends} (user_id, created_at_ns)",
    )

    @on(TelegramFrontend.Created)
    def created(self, cursor: TemplatedCursor, event: Event) -> None:
        data, at = event["data"], parse_ns(event["created_at"])
        cursor.execute(
            "INSERT INTO {telegram_frontends} (id, user_id, chat_chain, description, sealed_token, token_digest,"
            " sync_interval, status, last_offset, last_heartbeat_ns, last_error, created_at_ns, updated_at_ns)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, '', ?, NULL, '', ?, ?)",
            (
                event["aggregate_id"], data["userId"], data["chatChain"], data["description"], data["sealedToken"],
                data["tokenDigest"], data["syncInterval"], data["lastOffset"], at, at,
            ),
        )  # fmt: skip

    @on(TelegramFrontend.Updated)
    def updated(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "UPDATE {telegram_frontends} SET user_id = ?, chat_chain = ?, description = ?, sealed_token = ?,"
            " token_digest = ?, sync_interval = ?, last_offset = ?, updated_at_ns = ? WHERE id = ?",
            (
                data["userId"], data["chatChain"], data["description"], data["sealedToken"], data["tokenDigest"],
                data["syncInterval"], data["lastOffset"], parse_ns(event["created_at"]), event["aggregate_id"],
            ),
        )  # fmt: skip

    @on(TelegramFrontend.Deleted)
    def deleted(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute("DELETE FROM {telegram_frontends} WHERE id = ?", (event["aggregate_id"],))

    @on(TelegramFrontend.Polled)
    def polled(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "UPDATE {telegram_frontends} SET status = ?, last_offset = ?, last_heartbeat_ns = ? WHERE id = ?",
            (ACTIVE, data["offset"], parse_ns(data["heartbeat"]), event["aggregate_id"]),
        )

    @on(TelegramFrontend.PollFailed)
    def poll_failed(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "UPDATE {telegram_frontends} SET status = ?, last_error = ? WHERE id = ?",
            (FAILING, event["data"]["error"], event["aggregate_id"]),
        )

    @on(TelegramFrontend.ReplyFailed)
    def reply_failed(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "UPDATE {telegram_frontends} SET last_error = ? WHERE id = ?",
            (event["data"]["error"], event["aggregate_id"]),
        )
