"""Commands of the Telegram frontends: their configuration (``/telegram-frontends``) and the bot runtime's records.

A bot token is sealed with the process's ``SecretBox`` before the decision, as
provider API keys are (``commands.providers``), and digested with a key derived
from it, by which a second frontend with the same token is refused (409). No
event holds a token in clear.

The bot runtime (``projections.telegram_bots``) records through here: a batch
of updates with its jobs in one decision (``record_batch``), failed polls,
failed replies, and a prepared reply (``prepare_reply``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain import jobs as job_domain
from chainloom.domain.errors import NotFound
from chainloom.domain.telegram import (
    BOT_TOKEN,
    NOT_FOUND,
    FrontendSpec,
    IncomingMessage,
    TelegramFrontend,
    TelegramReply,
)
from chainloom.domain.uniqueness import ensure_free
from chainloom.infra.telegram import TokenSealer


def _frontend(log: Aggregates, frontend_id: str) -> TelegramFrontend:
    frontend = log.get(TelegramFrontend, frontend_id)
    if frontend is None or frontend.deleted:
        raise NotFound(NOT_FOUND)
    return frontend


class TelegramCommands:
    def __init__(
        self,
        runner: CommandRunner,
        background: CommandRunner,
        sealer: TokenSealer,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        """``runner`` waits for the ``telegram`` read model (the API's commands); ``background`` is the bot
        runtime's (it waits for the read models the runtime reads next: ``telegram`` and ``jobs``)."""
        self._runner = runner
        self._background = background
        self._sealer = sealer
        self._new_id = new_id

    # -- configuration ---------------------------------------------------------------------

    async def create(self, spec: FrontendSpec, ctx: CommandContext) -> str:
        """A new frontend; its id. A token another frontend holds: 409."""
        spec.validate()
        sealed = self._sealer.seal(spec.bot_token)
        frontend_id = self._new_id()

        def decide(log: Aggregates) -> Decision[str]:
            frontend = TelegramFrontend.create(frontend_id, spec, sealed)
            _token_free(log, sealed.token_digest, frontend_id)
            return Decision(frontend_id, [frontend])

        return await self._runner.run(decide, ctx)

    async def update(self, frontend_id: str, spec: FrontendSpec, ctx: CommandContext) -> None:
        """Configure it anew, whole; unknown: 404; a token another frontend holds: 409."""
        spec.validate()
        sealed = self._sealer.seal(spec.bot_token)

        def decide(log: Aggregates) -> Decision[None]:
            frontend = _frontend(log, frontend_id)
            frontend.update(spec, sealed)
            _token_free(log, sealed.token_digest, frontend_id)
            return Decision(None, [frontend])

        await self._runner.run(decide, ctx)

    async def delete(self, frontend_id: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            frontend = _frontend(log, frontend_id)
            frontend.delete()
            return Decision(None, [frontend])

        await self._runner.run(decide, ctx)

    # -- the bot runtime ----------------------------------------------------------------------

    async def record_batch(
        self,
        frontend_id: str,
        fetched_from: int,
        token_digest: str,
        next_offset: int,
        messages: Sequence[IncomingMessage],
        ctx: CommandContext,
    ) -> list[str]:
        """Record a fetched batch in one decision: the frontend's next offset (its heartbeat) and a job per message.
        The ids of the jobs enqueued; none when the batch is not the frontend's any more (its offset or token moved
        since the fetch: fetched again at the next poll) or nothing was worth recording."""
        job_ids = [self._new_id() for _ in messages]

        def decide(log: Aggregates) -> Decision[list[str]]:
            frontend = log.get(TelegramFrontend, frontend_id)
            if frontend is None:
                return Decision([], [])
            now = job_domain.clock()
            if not frontend.polled(fetched_from, token_digest, next_offset, len(messages), now):
                return Decision([], [])
            jobs = [message.job(job_id) for job_id, message in zip(job_ids, messages)]
            return Decision(job_ids, [frontend, *jobs])

        return await self._background.run(decide, ctx)

    async def record_poll_failure(self, frontend_id: str, error: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            frontend = log.get(TelegramFrontend, frontend_id)
            if frontend is None or not frontend.poll_failed(error, job_domain.clock()):
                return Decision(None, [])
            return Decision(None, [frontend])

        await self._background.run(decide, ctx)

    async def record_reply_failure(self, frontend_id: str, job_id: str, error: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            frontend = log.get(TelegramFrontend, frontend_id)
            if frontend is None or frontend.deleted:
                return Decision(None, [])
            frontend.reply_failed(job_id, error, job_domain.clock())
            return Decision(None, [frontend])

        await self._background.run(decide, ctx)

    async def prepared_reply(self, job_id: str, ctx: CommandContext) -> str | None:
        """The reply recorded for the job's message, if the chain has answered it before."""

        def decide(log: Aggregates) -> Decision[str | None]:
            reply = log.get(TelegramReply, job_id)
            return Decision(reply.text if reply is not None else None, [])

        return await self._background.run(decide, ctx)

    async def prepare_reply(self, job_id: str, message: IncomingMessage, text: str, ctx: CommandContext) -> None:
        """Record the chain's answer to the job's message before it is sent (once: a second is not recorded)."""

        def decide(log: Aggregates) -> Decision[None]:
            if log.get(TelegramReply, job_id) is not None:
                return Decision(None, [])
            return Decision(None, [TelegramReply.prepare(job_id, message.frontend_id, message.chat_id, text)])

        await self._background.run(decide, ctx)


def _token_free(log: Aggregates, token_digest: str, frontend_id: str) -> None:
    ensure_free(log.owner_of, BOT_TOKEN, token_digest, frontend_id, "bot token")
