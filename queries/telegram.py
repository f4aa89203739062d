"""Queries of the Telegram frontends (``projections.telegram``): what ``/telegram-frontends`` answers, and the
frontends as the bot runtime needs them.

Every answer shows the bot token as ``***-***`` (platform notes §11); only
``BotFrontends`` opens a sealed token, for the code that calls Telegram, and
never for an answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from chainloom.domain.telegram import MASK, NOT_FOUND
from chainloom.infra.readstore import ReadStore, Row
from chainloom.infra.secrets import SecretsUnavailable
from chainloom.infra.telegram import TokenSealer
from chainloom.infra.timefmt import format_ns
from chainloom.queries.cache import RememberedQueries

logger = logging.getLogger(__name__)

Json = dict[str, Any]
RunBlocking = Callable[..., Awaitable[Any]]

_COLUMNS = (
    "id, user_id, chat_chain, description, sync_interval, status, last_offset, last_heartbeat_ns, last_error,"
    " created_at_ns, updated_at_ns"
)
_NEWEST_FIRST = "ORDER BY created_at_ns DESC, id DESC"


def frontend_json(row: Row) -> Json:
    """The notes' entity (§11), its token masked; ``lastHeartbeat`` null until a poll reached Telegram."""
    heartbeat = row["last_heartbeat_ns"]
    return {
        "id": row["id"],
        "userId": row["user_id"],
        "chatChain": row["chat_chain"],
        "description": row["description"],
        "botToken": MASK,
        "syncInterval": row["sync_interval"],
        "status": row["status"],
        "lastOffset": row["last_offset"],
        "lastHeartbeat": format_ns(heartbeat) if heartbeat is not None else None,
        "lastError": row["last_error"],
        "createdAt": format_ns(row["created_at_ns"]),
        "updatedAt": format_ns(row["updated_at_ns"]),
    }


class TelegramQueries(RememberedQueries):
    namespace = "telegram"
    not_found = NOT_FOUND

    async def frontend(self, frontend_id: str) -> Json:
        return await self._one(frontend_json, f"SELECT {_COLUMNS} FROM telegram_frontends WHERE id = ?", frontend_id)

    async def frontends(self) -> list[Json]:
        return await self._rows(frontend_json, f"SELECT {_COLUMNS} FROM telegram_frontends {_NEWEST_FIRST}")

    async def frontends_of(self, user_id: str) -> list[Json]:
        return await self._rows(
            frontend_json, f"SELECT {_COLUMNS} FROM telegram_frontends WHERE user_id = ? {_NEWEST_FIRST}", user_id
        )


@dataclass(frozen=True)
class BotFrontend:
    """A frontend as the poller and the worker use it: its token in clear."""

    id: str
    bot_token: str
    token_digest: str
    chat_chain: str
    last_offset: int


class BotFrontends:
    """The frontends with their tokens opened (blocking reads through the pool; never answered)."""

    def __init__(self, store: ReadStore, run_blocking: RunBlocking, sealer: TokenSealer) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._sealer = sealer
        self._opened: dict[str, str] = {}

    async def all(self) -> list[BotFrontend]:
        rows = await self._run_blocking(
            self._store.query,
            "SELECT id, sealed_token, token_digest, chat_chain, last_offset FROM telegram_frontends ORDER BY id",
            (),
        )
        return [bot for bot in map(self._bot, rows) if bot is not None]

    async def one(self, frontend_id: str) -> BotFrontend | None:
        rows = await self._run_blocking(
            self._store.query,
            "SELECT id, sealed_token, token_digest, chat_chain, last_offset FROM telegram_frontends WHERE id = ?",
            (frontend_id,),
        )
        return self._bot(rows[0]) if rows else None

    def _bot(self, row: Row) -> BotFrontend | None:
        sealed = row["sealed_token"]
        token = self._opened.get(sealed)
        if token is None:
            try:
                token = self._sealer.open(sealed)
            except SecretsUnavailable as error:
                logger.warning("the bot token of Telegram frontend %s cannot be opened (%s)", row["id"], error)
                return None
            if len(self._opened) > 256:
                self._opened.clear()
            self._opened[sealed] = token
        return BotFrontend(row["id"], token, row["token_digest"], row["chat_chain"], row["last_offset"])
