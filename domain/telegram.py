"""Telegram frontends: a bot (its token, kept sealed) answered by a task chain, and the state of its polling.

A frontend (aggregate ``telegram_frontend``, key = a UUIDv4) holds what a
client configures — owner (``userId``), chain, description, bot token, sync
interval, the offset the next ``getUpdates`` starts from — and what the bot
runtime observes (``projections.telegram_bots``): its status, last heartbeat
and last error. Its events carry the token only as the service sealed it
(``sealed_token``, ciphertext: every event goes to the log and Kafka) and as a
keyed digest (``token_digest``, an HMAC under a key derived from the secrets
key), by which a token is unique across frontends (``domain.uniqueness``)
without the index holding it in clear.

A batch of updates is recorded in **one** decision: the frontend's new offset
(``Polled``) and one ``telegram-message`` job per message
(``message_job``), so a restart neither loses an update (the offset moves
only with its jobs) nor repeats one (the jobs exist only with the offset). A
poll whose fetch started from an offset the frontend no longer holds (another
poller, or a client's PUT, moved it meanwhile) records nothing
(``polled`` returns False), and the next poll fetches again.

Heartbeats are events too, so they are throttled: a poll that brings nothing
is recorded only when the status changes or the last heartbeat is older than
``HEARTBEAT_EVERY`` seconds; a failing poll only when its error changes or as
often.

A reply (``TelegramReply``, key = its job's id) is recorded once the chain has
answered and before it is sent: a job retried after a failed send sends that
reply again instead of running the chain a second time.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from eventsourcing.domain import event

from chainloom.domain.base import Aggregate
from chainloom.domain.errors import NotFound, Unprocessable
from chainloom.domain.jobs import Job, parse_rfc3339, rfc3339

NOT_FOUND = "libdb: not found"
INVALID = "invalid Telegram frontend data"
TELEGRAM_MESSAGE = "telegram-message"  # the task type of a message's job
DEFAULT_CHAIN = "chat_chain"
MASK = "***-***"  # every read shows a token so
BOT_TOKEN = "telegram.botToken"  # the scope of the tokens' digests among the unique values
MAX_TOKEN_LENGTH = 256
MAX_ERROR_LENGTH = 2000
# A poll bringing nothing new is recorded (its heartbeat) at most this often, in seconds.
HEARTBEAT_EVERY = 60.0
# The largest offset Telegram's update ids reach (they are signed 64-bit integers in the Bot API).
MAX_OFFSET = 2**63 - 1

ACTIVE = "active"  # the last poll reached Telegram
FAILING = "error"  # the last poll failed: lastError says why


def check_token(bot_token: str) -> None:
    """A token goes into the Bot API's URLs: printable ASCII without spaces, bounded, not empty."""
    if not bot_token:
        raise Unprocessable(f"{INVALID}: bot token is required", param="botToken")
    if len(bot_token) > MAX_TOKEN_LENGTH:
        raise Unprocessable(f"{INVALID}: bot token is longer than {MAX_TOKEN_LENGTH} characters", param="botToken")
    if not all("!" <= character <= "~" for character in bot_token):
        raise Unprocessable(f"{INVALID}: bot token must be printable ASCII without spaces", param="botToken")


def _clipped(error: str) -> str:
    return error if len(error) <= MAX_ERROR_LENGTH else error[: MAX_ERROR_LENGTH - 1] + "…"


@dataclass(frozen=True)
class FrontendSpec:
    """What a client configures (``POST``: the owner is the caller; ``PUT``: all of it, omitted fields reset)."""

    user_id: str
    bot_token: str
    chat_chain: str = DEFAULT_CHAIN
    description: str = ""
    sync_interval: int = 0
    last_offset: int = 0

    def validate(self) -> None:
        check_token(self.bot_token)
        if not self.user_id:
            raise Unprocessable(f"{INVALID}: user ID is required", param="userId")
        if not -MAX_OFFSET <= self.last_offset <= MAX_OFFSET:
            raise Unprocessable(f"{INVALID}: lastOffset is out of range", param="lastOffset")
        if not 0 <= self.sync_interval <= MAX_OFFSET:
            raise Unprocessable(f"{INVALID}: syncInterval must be 0 or more", param="syncInterval")


@dataclass(frozen=True)
class Sealed:
    """A token as events may carry it: sealed (``infra.secrets.SecretBox``) and digested (for uniqueness)."""

    sealed_token: str
    token_digest: str


class TelegramFrontend(Aggregate):
    aggregate_type = "telegram_frontend"

    class Created(Aggregate.Created):
        user_id: str
        chat_chain: str
        description: str
        sealed_token: str
        token_digest: str
        sync_interval: int
        last_offset: int

    class Updated(Aggregate.Event):
        """Configured anew, whole (``PUT``): the runtime's status, heartbeat and error are kept."""

        user_id: str
        chat_chain: str
        description: str
        sealed_token: str
        token_digest: str
        sync_interval: int
        last_offset: int

    class Deleted(Aggregate.Event):
        pass

    class Polled(Aggregate.Event):
        """``getUpdates`` answered: the next one starts at ``offset``; ``messages`` jobs were enqueued with it."""

        offset: int
        messages: int
        heartbeat: str

    class PollFailed(Aggregate.Event):
        error: str
        at: str

    class ReplyFailed(Aggregate.Event):
        """Answering a message failed (its job is retried, up to the job queue's bound)."""

        job_id: str
        error: str
        at: str

    # -- configuration ------------------------------------------------------------------

    @classmethod
    def create(cls, frontend_id: str, spec: FrontendSpec, sealed: Sealed) -> TelegramFrontend:
        spec.validate()
        return cls._create(
            cls.Created,
            id=cls.stream_id(frontend_id),
            user_id=spec.user_id,
            chat_chain=spec.chat_chain,
            description=spec.description,
            sealed_token=sealed.sealed_token,
            token_digest=sealed.token_digest,
            sync_interval=spec.sync_interval,
            last_offset=spec.last_offset,
        )

    @event(Created)
    def __init__(
        self,
        user_id: str,
        chat_chain: str,
        description: str,
        sealed_token: str,
        token_digest: str,
        sync_interval: int,
        last_offset: int,
    ) -> None:
        self._configure(user_id, chat_chain, description, sealed_token, token_digest, sync_interval, last_offset)
        self.status = ""
        self.last_heartbeat = ""
        self.last_error = ""
        self.deleted = False

    def unique_values(self) -> dict[str, str]:
        return {} if self.deleted else {BOT_TOKEN: self.token_digest}

    def ensure_exists(self) -> None:
        if self.deleted:
            raise NotFound(NOT_FOUND)

    def update(self, spec: FrontendSpec, sealed: Sealed) -> None:
        self.ensure_exists()
        spec.validate()
        self._update(
            user_id=spec.user_id,
            chat_chain=spec.chat_chain,
            description=spec.description,
            sealed_token=sealed.sealed_token,
            token_digest=sealed.token_digest,
            sync_interval=spec.sync_interval,
            last_offset=spec.last_offset,
        )

    def delete(self) -> None:
        self.ensure_exists()
        self._delete()

    @event(Updated)
    def _update(
        self,
        user_id: str,
        chat_chain: str,
        description: str,
        sealed_token: str,
        token_digest: str,
        sync_interval: int,
        last_offset: int,
    ) -> None:
        self._configure(user_id, chat_chain, description, sealed_token, token_digest, sync_interval, last_offset)

    @event(Deleted)
    def _delete(self) -> None:
        self.deleted = True

    def _configure(
        self,
        user_id: str,
        chat_chain: str,
        description: str,
        sealed_token: str,
        token_digest: str,
        sync_interval: int,
        last_offset: int,
    ) -> None:
        self.user_id = user_id
        self.chat_chain = chat_chain
        self.description = description
        self.sealed_token = sealed_token
        self.token_digest = token_digest
        self.sync_interval = sync_interval
        self.last_offset = last_offset

    # -- the bot runtime ---------------------------------------------------------------------

    def fetched_with(self, offset: int, token_digest: str) -> bool:
        """Whether a fetch made from ``offset`` with that token is still this frontend's next batch."""
        return not self.deleted and self.last_offset == offset and self.token_digest == token_digest

    def polled(self, fetched_from: int, token_digest: str, next_offset: int, messages: int, now: datetime) -> bool:
        """Record a poll that started at ``fetched_from`` and confirmed up to ``next_offset`` (with ``messages``
        jobs enqueued beside it). False, recording nothing, when the batch is no longer this frontend's (its
        offset or token moved meanwhile) or when nothing is worth an event (no new offset, still active, and a
        heartbeat younger than ``HEARTBEAT_EVERY``)."""
        if not self.fetched_with(fetched_from, token_digest):
            return False
        fresh = (
            self.status == ACTIVE
            and bool(self.last_heartbeat)
            and now - parse_rfc3339(self.last_heartbeat) < timedelta(seconds=HEARTBEAT_EVERY)
        )
        if next_offset == self.last_offset and messages == 0 and fresh:
            return False
        self._polled(offset=next_offset, messages=messages, heartbeat=rfc3339(now))
        return True

    @event(Polled)
    def _polled(self, offset: int, messages: int, heartbeat: str) -> None:
        self.last_offset = offset
        self.last_heartbeat = heartbeat
        self.status = ACTIVE

    def poll_failed(self, error: str, now: datetime) -> bool:
        """Record a failed poll, unless the same error was recorded less than ``HEARTBEAT_EVERY`` ago."""
        if self.deleted:
            return False
        error = _clipped(error)
        if self.status == FAILING and self.last_error == error and self._failed_at:
            if now - parse_rfc3339(self._failed_at) < timedelta(seconds=HEARTBEAT_EVERY):
                return False
        self._poll_failed(error=error, at=rfc3339(now))
        return True

    @event(PollFailed)
    def _poll_failed(self, error: str, at: str) -> None:
        self.status = FAILING
        self.last_error = error
        self._failed_at = at

    _failed_at = ""

    def reply_failed(self, job_id: str, error: str, now: datetime) -> None:
        if not self.deleted:
            self._reply_failed(job_id=job_id, error=_clipped(error), at=rfc3339(now))

    @event(ReplyFailed)
    def _reply_failed(self, job_id: str, error: str, at: str) -> None:
        self.last_error = error


# -- the messages of a batch ------------------------------------------------------------------


@dataclass(frozen=True)
class IncomingMessage:
    """A text message of an update, as the worker needs it (platform notes §11's job envelope)."""

    frontend_id: str
    chain_id: str
    update: Mapping[str, Any]
    user_id: str  # the sender's Telegram id (the user's id and subject)
    subject_id: str  # the chat's id and the sender's, concatenated: the chat session's id
    chat_id: int  # where the reply goes
    text: str
    username: str

    @classmethod
    def of_update(cls, frontend_id: str, chain_id: str, update: Mapping[str, Any]) -> IncomingMessage | None:
        """The text message an update carries; None for any other update (edits, photos, callbacks …)."""
        message = update.get("message")
        if not isinstance(message, Mapping):
            return None
        text, chat, sender = message.get("text"), message.get("chat"), message.get("from")
        if not isinstance(text, str) or not text or not isinstance(chat, Mapping) or not isinstance(sender, Mapping):
            return None
        chat_id, sender_id = chat.get("id"), sender.get("id")
        if not isinstance(chat_id, int) or not isinstance(sender_id, int):
            return None
        username = sender.get("username") or sender.get("first_name") or ""
        return cls(
            frontend_id=frontend_id,
            chain_id=chain_id,
            update=update,
            user_id=str(sender_id),
            subject_id=f"{chat_id}{sender_id}",
            chat_id=chat_id,
            text=text,
            username=username if isinstance(username, str) else "",
        )

    def payload(self) -> str:
        """The job's payload: base64 of the notes' envelope ``{Update, ChainID, Frontend, UserID, SubjectID}`` —
        without ``BotToken``, which stays sealed on the frontend (the job queue is listed and on the log)."""
        envelope = {
            "Update": dict(self.update),
            "ChainID": self.chain_id,
            "Frontend": self.frontend_id,
            "UserID": self.user_id,
            "SubjectID": self.subject_id,
        }
        return base64.b64encode(json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()).decode()

    @classmethod
    def of_payload(cls, payload: str) -> IncomingMessage:
        """The message a job's payload carries; ``Unprocessable`` when it is not such a payload."""
        try:
            envelope = json.loads(base64.b64decode(payload, validate=True))
            message = cls.of_update(str(envelope["Frontend"]), str(envelope["ChainID"]), envelope["Update"])
        except (ValueError, KeyError, TypeError):
            message = None
        if message is None:
            raise Unprocessable("not a telegram-message payload")
        return message

    def job(self, job_id: str) -> Job:
        """Its ``telegram-message`` job (operation, subject and entity empty, as the reference has them)."""
        return Job.enqueue(job_id, TELEGRAM_MESSAGE, "", "", "", "", payload=self.payload())


class TelegramReply(Aggregate):
    """What the chain answered to the message of a job (key = the job's id), recorded before it is sent."""

    aggregate_type = "telegram_reply"

    class Prepared(Aggregate.Created):
        frontend_id: str
        chat_id: int
        text: str

    @classmethod
    def prepare(cls, job_id: str, frontend_id: str, chat_id: int, text: str) -> TelegramReply:
        return cls._create(cls.Prepared, id=cls.stream_id(job_id), frontend_id=frontend_id, chat_id=chat_id, text=text)

    @event(Prepared)
    def __init__(self, frontend_id: str, chat_id: int, text: str) -> None:
        self.frontend_id = frontend_id
        self.chat_id = chat_id
        self.text = text
