"""Read model of chat sessions (``chats``): one row per chat, one per message.

``chats`` answers ``GET /chats`` (a caller's chats, by owner); ``chat_messages``
answers ``GET /chats/{id}`` (the history, in the order of the chat's events:
``seq`` is the event's version). Times come from the events (the chat's
``created_at``, each message's ``sentAt``), so a rebuild gives the same rows.
"""

from __future__ import annotations

from chainloom.domain.chats import Chat
from chainloom.infra.timefmt import parse_ns
from chainloom.projections.base import Event, Projector, TemplatedCursor, on


class ChatsProjector(Projector):
    name = "chats"
    tables = ("chats", "chat_messages")
    schema = (
        "CREATE TABLE IF NOT EXISTS {chats} ("
        " id TEXT PRIMARY KEY, owner TEXT NOT NULL, started_at_ns BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {chats_owned} ON {chats} (owner, started_at_ns, id)",
        "CREATE TABLE IF NOT EXISTS {chat_messages} ("
        " chat_id TEXT NOT NULL, seq INTEGER NOT NULL, message_id TEXT NOT NULL, role TEXT NOT NULL,"
        " content TEXT NOT NULL, sent_at TEXT NOT NULL, PRIMARY KEY (chat_id, seq))",
    )

    @on(Chat.Started)
    def started(self, cursor: TemplatedCursor, event: Event) -> None:
        cursor.execute(
            "INSERT INTO {chats} (id, owner, started_at_ns) VALUES (?, ?, ?)",
            (event["aggregate_id"], event["data"]["owner"], parse_ns(event["created_at"])),
        )

    @on(Chat.MessageAdded)
    def message_added(self, cursor: TemplatedCursor, event: Event) -> None:
        data = event["data"]
        cursor.execute(
            "INSERT INTO {chat_messages} (chat_id, seq, message_id, role, content, sent_at) VALUES (?, ?, ?, ?, ?, ?)",
            (event["aggregate_id"], event["version"], data["messageId"], data["role"], data["content"], data["sentAt"]),
        )
