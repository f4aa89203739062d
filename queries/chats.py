"""Queries of the chat read model (``projections.chats``): a caller's chats, and a chat's history.

A chat answers as the notes' list item (platform notes §10.1) —
``{"id", "startedAt", "backendId": ""}``, ``lastMessage`` omitted — with the
time it was really started (the reference sends the zero time). A history is
``[{"id", "role", "content", "sentAt", "isUser", "isLatest"}]``, oldest first:
``isUser`` when the role is ``user``, ``isLatest`` on the last message only. A
chat nobody started has an empty history (no ownership check, as the notes say).
"""

from __future__ import annotations

from typing import Any

from chainloom.domain.chats import USER
from chainloom.infra.readstore import Row
from chainloom.infra.timefmt import format_ns
from chainloom.queries.cache import RememberedQueries
from chainloom.queries.pagination import MAX_LIMIT

Json = dict[str, Any]
# The most chats a listing answers: a caller's newest.
MAX_CHATS = MAX_LIMIT


def chat_json(row: Row) -> Json:
    return {"id": row["id"], "startedAt": format_ns(row["started_at_ns"]), "backendId": ""}


def _message(row: Row) -> Json:
    return {
        "id": row["message_id"],
        "role": row["role"],
        "content": row["content"],
        "sentAt": row["sent_at"],
        "isUser": row["role"] == USER,
    }


class ChatQueries(RememberedQueries):
    namespace = "chats"

    async def owned_by(self, owner: str) -> list[Json]:
        """The chats ``owner`` started, newest first (at most ``MAX_CHATS``)."""
        return await self._rows(
            chat_json,
            "SELECT id, started_at_ns FROM chats WHERE owner = ? ORDER BY started_at_ns DESC, id DESC LIMIT ?",
            owner,
            MAX_CHATS,
        )

    async def history(self, chat_id: str) -> list[Json]:
        """The chat's messages, oldest first; [] for a chat nobody started."""
        rows = await self._rows(
            _message,
            "SELECT message_id, role, content, sent_at FROM chat_messages WHERE chat_id = ? ORDER BY seq",
            chat_id,
        )
        last = len(rows) - 1
        return [{**item, "isLatest": index == last} for index, item in enumerate(rows)]
