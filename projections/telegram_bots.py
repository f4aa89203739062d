"""The Telegram bot runtime: a poller and a message worker, each a singleton job (``projections.periodic``).

**The poller** (lock ``telegram-poller``), every ``CHAINLOOM_TELEGRAM_POLL_INTERVAL``
seconds, asks Telegram for the updates of every frontend from its durable
offset (``getUpdates``) and records each batch in **one** decision
(``commands.telegram.TelegramCommands.record_batch``): the frontend's next
offset with its heartbeat, and one ``telegram-message`` job per text message.
Telegram drops the updates before an offset only when a later ``getUpdates``
names it, so a crash before the decision fetches the batch again, and one
after it finds the batch recorded: no message is lost or enqueued twice. A
poll that fails records the frontend's status ``error`` and its last error.

**The worker** (lock ``telegram-worker``), every interval and whenever the
poller of its process enqueued something, leases ``telegram-message`` jobs
from the job queue the documents use (``commands.jobs.JobCommands``), and for
each: makes the sender a user (id = subject = the Telegram id, e-mail
``<id>@telegram.contnox.com``, no password), makes the chat session (id = the
chat's and the sender's ids), runs the chat through the frontend's chain
(``ChatCommands.chat``), records the reply, sends it (``sendMessage``), and
reports the job done. A failure is reported to the job — pending again, parked
after ``CHAINLOOM_JOB_MAX_FAILURES`` — and recorded as the frontend's last
error; the worker then waits for its next interval before it leases again. A
job retried after its reply was recorded sends that reply, without running
the chain again.

A job abandoned by a worker that died holds its lease until the lease reaper
puts it back (``LEASE_MS`` after it was leased).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from chainloom.commands.base import CommandContext
from chainloom.domain.errors import DomainError, NotFound
from chainloom.domain.identity import Profile
from chainloom.domain.telegram import TELEGRAM_MESSAGE, IncomingMessage
from chainloom.infra.singleton import Lock
from chainloom.infra.telegram import TelegramClient, TelegramError
from chainloom.projections.periodic import PeriodicJob, RunBlocking
from chainloom.queries.telegram import BotFrontend, BotFrontends

logger = logging.getLogger(__name__)

LEASER = "telegram-worker"
# How long the worker holds a message's job (a chain may take minutes): the reaper re-delivers it after this.
LEASE_MS = 15 * 60 * 1000
# Jobs answered in one step at most (the worker looks again at once when it answered that many).
PER_STEP = 100
# Frontends polled at the same time.
PARALLEL_POLLS = 8
EMAIL_DOMAIN = "telegram.contnox.com"

POLLER = CommandContext(actor="system", request_id="telegram-poller")
WORKER = CommandContext(actor="system", request_id="telegram-worker")


class TelegramRecords(Protocol):
    """``commands.telegram.TelegramCommands``: what the runtime records."""

    async def record_batch(
        self,
        frontend_id: str,
        fetched_from: int,
        token_digest: str,
        next_offset: int,
        messages: Sequence[IncomingMessage],
        ctx: CommandContext,
    ) -> list[str]: ...

    async def record_poll_failure(self, frontend_id: str, error: str, ctx: CommandContext) -> None: ...

    async def record_reply_failure(self, frontend_id: str, job_id: str, error: str, ctx: CommandContext) -> None: ...

    async def prepared_reply(self, job_id: str, ctx: CommandContext) -> str | None: ...

    async def prepare_reply(self, job_id: str, message: IncomingMessage, text: str, ctx: CommandContext) -> None: ...


class Jobs(Protocol):
    """``commands.jobs.JobCommands``."""

    async def lease(self, leaser: str, duration_ms: int, job_types: Sequence[str], ctx: CommandContext) -> dict[str, Any]: ...

    async def failed(self, job_id: str, leaser: str, error: str, ctx: CommandContext) -> None: ...

    async def done(self, job_id: str, leaser: str, ctx: CommandContext) -> None: ...


class Users(Protocol):
    """``commands.identity.IdentityCommands``."""

    async def ensure_user(self, user_id: str, profile: Profile, ctx: CommandContext) -> bool: ...


class Reply(Protocol):
    @property
    def response(self) -> str: ...


class Chats(Protocol):
    """``commands.chats.ChatCommands``."""

    async def ensure(self, chat_id: str, owner: str, ctx: CommandContext) -> None: ...

    async def chat(self, chat_id: str, message: str, ctx: CommandContext, *, chain_id: str = ...) -> Reply: ...


def _describe(error: BaseException) -> str:
    if isinstance(error, DomainError):
        return error.message
    if isinstance(error, TelegramError):
        return str(error)
    return f"{type(error).__name__}: {error}"


class TelegramPoller(PeriodicJob):
    name = "telegram poller"
    lock_name = "telegram-poller"

    def __init__(
        self,
        frontends: BotFrontends,
        records: TelegramRecords,
        client: TelegramClient,
        lock: Lock,
        run_blocking: RunBlocking,
        *,
        interval: float,
        enqueued: Callable[[], None] = lambda: None,
    ) -> None:
        """``enqueued``: called after a step that enqueued messages (wakes this process's worker)."""
        super().__init__(lock, run_blocking, interval=interval)
        self._frontends = frontends
        self._records = records
        self._client = client
        self._enqueued = enqueued

    async def step(self) -> int:
        """Poll every frontend once; how many messages were enqueued."""
        bots = await self._frontends.all()
        if not bots:
            return 0
        gate = asyncio.Semaphore(PARALLEL_POLLS)
        polls: asyncio.Future[list[int]] = asyncio.gather(*(self._poll(bot, gate) for bot in bots))
        # A stop does not wait for Telegram: a poll cut short records its batch whole or not at all.
        woken: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
        await asyncio.wait([polls, woken], return_when=asyncio.FIRST_COMPLETED)
        woken.cancel()
        if not polls.done() and self.stopping:
            polls.cancel()
            await asyncio.gather(polls, return_exceptions=True)
            return 0
        enqueued = sum(await polls)
        if enqueued:
            self._enqueued()
        return enqueued

    async def _poll(self, bot: BotFrontend, gate: asyncio.Semaphore) -> int:
        try:
            async with gate:
                updates = await self._client.get_updates(bot.bot_token, bot.last_offset)
            fresh = [update for update in updates if update["update_id"] >= bot.last_offset]
            next_offset = max((update["update_id"] + 1 for update in fresh), default=bot.last_offset)
            messages = [
                message
                for update in fresh
                if (message := IncomingMessage.of_update(bot.id, bot.chat_chain, update)) is not None
            ]
            ctx = CommandContext(actor="system", request_id=f"telegram-poll:{uuid.uuid4()}")
            jobs = await self._records.record_batch(bot.id, bot.last_offset, bot.token_digest, next_offset, messages, ctx)
            return len(jobs)
        except Exception as error:  # noqa: BLE001 - one frontend's trouble must not stop the others
            if not isinstance(error, TelegramError):
                logger.warning("telegram poller: polling frontend %s failed", bot.id, exc_info=True)
            try:
                await self._records.record_poll_failure(bot.id, _describe(error), POLLER)
            except Exception:  # noqa: BLE001 - the store is away: the next interval tries again
                logger.debug("telegram poller: recording a failed poll failed", exc_info=True)
            return 0


class TelegramWorker(PeriodicJob):
    name = "telegram worker"
    lock_name = "telegram-worker"

    def __init__(
        self,
        jobs: Jobs,
        records: TelegramRecords,
        frontends: BotFrontends,
        users: Users,
        chats: Callable[[], Chats],
        client: TelegramClient,
        lock: Lock,
        run_blocking: RunBlocking,
        *,
        interval: float,
    ) -> None:
        """``chats``: the chat commands, looked up when first needed."""
        super().__init__(lock, run_blocking, interval=interval)
        self._jobs = jobs
        self._records = records
        self._frontends = frontends
        self._users = users
        self._chats = chats
        self._client = client

    def poke(self) -> None:
        """Look for jobs now rather than at the next interval."""
        self._wake.set()

    async def step(self) -> int:
        """Answer the pending messages (until one fails); how many were answered."""
        answered = 0
        while not self.stopping and answered < PER_STEP:
            try:
                job = await self._jobs.lease(LEASER, LEASE_MS, [TELEGRAM_MESSAGE], WORKER)
            except NotFound:
                break
            if not await self._answer(job["id"], job["payload"]):
                break
            answered += 1
        if answered >= PER_STEP:
            self.poke()
        return answered

    async def _answer(self, job_id: str, payload: str) -> bool:
        ctx = CommandContext(actor="system", request_id=f"telegram-message:{job_id}")
        message: IncomingMessage | None = None
        try:
            message = IncomingMessage.of_payload(payload)
            ctx = CommandContext(actor=message.user_id, request_id=ctx.request_id)
            await self._reply(job_id, message, ctx)
        except Exception as error:  # noqa: BLE001 - reported to the job (retried, then parked) and the frontend
            description = _describe(error)
            if not isinstance(error, (DomainError, TelegramError)):
                logger.warning("telegram worker: answering job %s failed", job_id, exc_info=True)
            await self._jobs.failed(job_id, LEASER, description, ctx)
            if message is not None:
                await self._records.record_reply_failure(message.frontend_id, job_id, description, ctx)
            return False
        await self._jobs.done(job_id, LEASER, ctx)
        return True

    async def _reply(self, job_id: str, message: IncomingMessage, ctx: CommandContext) -> None:
        bot = await self._frontends.one(message.frontend_id)
        if bot is None:
            raise NotFound(f"telegram frontend {message.frontend_id}: libdb: not found")
        text = await self._records.prepared_reply(job_id, ctx)
        if text is None:
            profile = Profile(f"{message.user_id}@{EMAIL_DOMAIN}", message.username)
            await self._users.ensure_user(message.user_id, profile, ctx)
            chats = self._chats()
            await chats.ensure(message.subject_id, message.user_id, ctx)
            reply = await chats.chat(message.subject_id, message.text, ctx, chain_id=message.chain_id)
            text = reply.response
            await self._records.prepare_reply(job_id, message, text, ctx)
        await self._client.send_message(bot.bot_token, message.chat_id, text)
