"""A chat session (aggregate ``chat``, key = its id): who owns it, and its messages — its history is its events.

A chat is started by its owner (``chat.started``: a user's subject, or the
API key's actor) and grows one ``chat.message_added`` per message, oldest
first, so a conversation can be audited and replayed from the log as it was
held. A turn (``commands.chats``) records the user's message and what the
chain answered in one decision: either the whole turn is in the log or none
of it.

A message carries the notes' payload (platform notes §10.1): ``messageId``,
``role``, ``content`` and the time it was sent (``sentAt``, RFC 3339 UTC — the
event's own ``timestamp`` is the library's, so the field has another name).
Its id is deterministic, as the reference makes it: the SHA-1 hex of chat id +
content + role + the sent time in whole seconds (``message_id``). Two
identical messages of one role within one second therefore share an id; both
are kept (the history is the events, not a set of ids).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import Conflict, Unprocessable
from chainloom.domain.jobs import rfc3339

USER = "user"
ASSISTANT = "assistant"
SYSTEM = "system"
# What the last message of a chain's answer must be (platform notes §10.1).
REPLY_ROLES = (ASSISTANT, SYSTEM)
# The longest role a message may have (roles are words: user, assistant, system, tool).
MAX_ROLE_LENGTH = 64


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


# The clock messages are stamped with (freezegun pins ``datetime.now``; tests may swap this for their own).
clock: Callable[[], datetime] = _utc_now


def whole_seconds(moment: datetime) -> str:
    """``2025-08-21T10:11:12Z``: RFC 3339 UTC in whole seconds (Go's ``time.RFC3339`` of a UTC time)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def message_id(chat_id: str, content: str, role: str, sent_at: datetime) -> str:
    """The reference's deterministic message id: SHA-1 hex of chat id + content + role + time (seconds)."""
    text = chat_id + content + role + whole_seconds(sent_at)
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def unknown_chat(chat_id: str) -> Conflict:
    """A message for a chat that was never started: the reference's foreign-key violation (409)."""
    return Conflict(f"chat {chat_id} does not exist: foreign key constraint violation")


@dataclass(frozen=True)
class ChatMessage:
    id: str
    role: str
    content: str
    sent_at: str  # RFC 3339 UTC

    def history_json(self) -> dict[str, Any]:
        """The message as a chain's ``chat_history`` holds it."""
        return {"id": self.id, "role": self.role, "content": self.content, "timestamp": self.sent_at}


class Chat(Aggregate):
    aggregate_type = "chat"

    class Started(Aggregate.Created):
        owner: str

    class MessageAdded(Aggregate.Event):
        message_id: str
        role: str
        content: str
        sent_at: str

    @classmethod
    def start(cls, chat_id: str, owner: str) -> Chat:
        if not chat_id:
            raise Unprocessable("a chat needs an id", param="id")
        return cls._create(cls.Started, id=cls.stream_id(chat_id), owner=owner)

    @event(Started)
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.messages: list[ChatMessage] = []

    def add_message(self, role: str, content: str, sent_at: datetime | None = None) -> ChatMessage:
        """Append a message sent at ``sent_at`` (default: now); the message as recorded."""
        if not role or len(role) > MAX_ROLE_LENGTH:
            raise Unprocessable(f"a message needs a role of 1 to {MAX_ROLE_LENGTH} characters", param="role")
        moment = clock() if sent_at is None else sent_at
        self._add(
            message_id=message_id(self.key, content, role, moment), role=role, content=content, sent_at=rfc3339(moment)
        )
        return self.messages[-1]

    @event(MessageAdded)
    def _add(self, message_id: str, role: str, content: str, sent_at: str) -> None:
        self.messages.append(ChatMessage(message_id, role, content, sent_at))

    def history(self) -> list[dict[str, Any]]:
        """The messages, oldest first, as a chain's ``chat_history`` holds them."""
        return [item.history_json() for item in self.messages]
