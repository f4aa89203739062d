"""Commands of chat sessions: start one, add an instruction, and hold a turn — a chain run on the chat's history.

A turn (``ChatCommands.chat``, platform notes §10.1) reads the chat's history
from its aggregate, appends the user's message, and runs the chain (``chat_chain``
unless told otherwise) through the task engine on that ``chat_history``. The
chain must answer a ``chat_history`` whose last message is the assistant's (or a
system message): its text is the reply. Then **one** decision records the
user's message and the messages the chain added after it (those it put in front,
such as a model step's system instruction, are the chain's framing, not the
conversation's; a chain that does not hand the conversation back has its last
message recorded alone). A chain that fails records nothing.

``models`` and ``provider`` route the turn (the notes' REC: the reference takes
them and never applies them): they replace the model and provider lists of the
chain's ``model_execution`` tasks for this run (``commands.chat_chains.with_models``);
the rating prompts keep theirs.
Token counts are those the model step put on the history (``inputTokens``,
``outputTokens``): zero when no model ran (a command such as ``/echo``).

A chat that does not exist is 409 (the reference's foreign-key violation), checked
before the chain runs and again when the turn is recorded.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decision
from chainloom.commands.chat_chains import CHAT_CHAIN, with_models
from chainloom.domain import chats as chat_domain
from chainloom.domain.chats import REPLY_ROLES, USER, Chat, message_id, unknown_chat
from chainloom.domain.errors import Conflict, NotFound, Unprocessable
from chainloom.domain.jobs import parse_rfc3339, rfc3339
from chainloom.domain.taskchains import ChainDefinition
from chainloom.domain.taskengine import ChainFailed
from chainloom.domain.taskengine.values import CHAT_HISTORY, chat_history

RunBlocking = Callable[..., Awaitable[Any]]
Json = dict[str, Any]
OnPiece = Callable[[str], Awaitable[None]]


class Chains(Protocol):
    """``queries.taskchains.TaskChainQueries``."""

    async def definition(self, chain_id: str) -> ChainDefinition | None: ...


class Engine(Protocol):
    """``commands.tasks.TaskEngine``."""

    async def run(
        self,
        chain: ChainDefinition,
        value: Any,
        value_type: str,
        *,
        client_tools: Sequence[dict] = (),
        on_piece: OnPiece | None = None,
        ctx: CommandContext,
    ) -> Any:
        """A ``commands.tasks.RunResult``: ``output``, ``output_type``, ``state``."""


@dataclass(frozen=True)
class ChatReply:
    response: str
    state: list[dict]  # the task-engine steps (the step shape of §10.1)
    input_tokens: int
    output_tokens: int


def added_messages(output: Mapping[str, Any], known: set[str], user_message_id: str) -> list[Json]:
    """What a chain's answer adds to the conversation: the messages after the user's not recorded yet — or,
    when the answer does not hold the user's message, its last message alone (messages without a role:
    none)."""
    messages = [m for m in output.get("messages") or () if isinstance(m, dict) and m.get("role")]
    after = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("id") == user_message_id), None)
    if after is None:
        return messages[-1:]
    return [m for m in messages[after + 1 :] if not m.get("id") or m.get("id") not in known]


def _sent_at(item: Mapping[str, Any], default: datetime) -> datetime:
    """When a message of the chain's answer was made (its ``timestamp``), or ``default``."""
    stamp = item.get("timestamp")
    if isinstance(stamp, str) and stamp:
        try:
            moment = parse_rfc3339(stamp)
        except ValueError:
            return default
        if moment.tzinfo is not None:
            return moment
    return default


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0


class ChatCommands:
    def __init__(
        self,
        runner: CommandRunner,
        engine: Engine,
        chains: Chains,
        load: Callable[[str], Chat | None],
        run_blocking: RunBlocking,
    ) -> None:
        """``load``: the chat as its events tell it (blocking: ``infra.eventlog.EventLog.get``), read before a
        turn's chain runs; the turn is decided again on the log."""
        self._runner = runner
        self._engine = engine
        self._chains = chains
        self._load = load
        self._run_blocking = run_blocking

    async def create(self, owner: str, ctx: CommandContext, chat_id: str | None = None) -> str:
        """Start a chat owned by ``owner`` (a new UUIDv4 id unless given); its id. 409 when the id is taken."""
        key = chat_id or str(uuid.uuid4())

        def decide(log: Aggregates) -> Decision[str]:
            if log.get(Chat, key) is not None:
                raise Conflict(f"chat {key} already exists: unique constraint violation")
            return Decision(key, [Chat.start(key, owner)])

        return await self._runner.run(decide, ctx)

    async def ensure(self, chat_id: str, owner: str, ctx: CommandContext) -> None:
        """Start the chat ``chat_id`` for ``owner`` unless it exists (whoever owns it)."""

        def decide(log: Aggregates) -> Decision[None]:
            if log.get(Chat, chat_id) is not None:
                return Decision(None, [])
            return Decision(None, [Chat.start(chat_id, owner)])

        await self._runner.run(decide, ctx)

    async def instruct(self, chat_id: str, instruction: str, ctx: CommandContext) -> None:
        """Append ``instruction`` to the chat as a system message (what the reference intends)."""
        if not instruction:
            raise Unprocessable("instruction is required", param="instruction")

        def decide(log: Aggregates) -> Decision[None]:
            chat = log.get(Chat, chat_id)
            if chat is None:
                raise unknown_chat(chat_id)
            chat.add_message(chat_domain.SYSTEM, instruction)
            return Decision(None, [chat])

        await self._runner.run(decide, ctx)

    async def chat(
        self,
        chat_id: str,
        message: str,
        ctx: CommandContext,
        *,
        chain_id: str = CHAT_CHAIN,
        models: Sequence[str] = (),
        provider: str = "",
        on_piece: OnPiece | None = None,
    ) -> ChatReply:
        """Hold a turn: ``message`` from the user, the chain's answer recorded with it. ``on_piece``: called
        with each piece of a streaming model step's reply as it arrives."""
        if not message:
            raise Unprocessable("message is required", param="message")
        chat = await self._run_blocking(self._load, chat_id)
        if chat is None:
            raise unknown_chat(chat_id)
        chain = await self._chains.definition(chain_id)
        if chain is None:
            raise NotFound(f"failed to load task chain '{chain_id}': failed to get task chain: libdb: not found")
        said_at = chat_domain.clock()
        user_id = message_id(chat_id, message, USER, said_at)
        history = [*chat.history(), {"id": user_id, "role": USER, "content": message, "timestamp": rfc3339(said_at)}]
        try:
            result = await self._engine.run(
                with_models(chain, models, provider), chat_history(history), CHAT_HISTORY, on_piece=on_piece, ctx=ctx
            )
        except ChainFailed as error:
            raise error.as_answer(f"chain execution failed: {error.message}") from None
        output = result.output
        if result.output_type != CHAT_HISTORY or not isinstance(output, dict) or not output.get("messages"):
            raise Unprocessable(f"the chain {chain_id} answered no chat history (but {result.output_type})")
        last = output["messages"][-1]
        if not isinstance(last, dict) or last.get("role") not in REPLY_ROLES:
            role = last.get("role") if isinstance(last, dict) else None
            raise Unprocessable(f"the chain's last message must be the assistant's or a system message, not {role!r}")
        known = {item["id"] for item in history}
        added = added_messages(output, known, user_id)

        def decide(log: Aggregates) -> Decision[None]:
            chat = log.get(Chat, chat_id)
            if chat is None:
                raise unknown_chat(chat_id)
            chat.add_message(USER, message, said_at)
            recorded_at = chat_domain.clock()
            for item in added:
                role, content = str(item.get("role") or ""), str(item.get("content") or "")
                chat.add_message(role, content, _sent_at(item, recorded_at))
            return Decision(None, [chat])

        await self._runner.run(decide, ctx)
        return ChatReply(
            response=str(last.get("content") or ""),
            state=result.state,
            input_tokens=_count(output.get("inputTokens")),
            output_tokens=_count(output.get("outputTokens")),
        )
