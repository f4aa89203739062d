"""The platform's two chat chains, ``chat_chain`` and ``openai_chat_chain``, and their seeding at start-up.

They are ordinary stored task chains (the ``taskchain`` aggregate: ``/taskchains`` and ``/chains`` read,
edit and delete them), stored at start-up when absent — never over an edit; a deleted one is stored again
at the next start, as the reference seeds whatever its store lacks. Seeding decides on the log like any
command, so processes starting together store each chain once (the one that loses the race decides
again and finds it there).

``chat_chain`` (platform notes §10.1) runs on a ``chat_history`` whose last message is the user's:

    commands ─/echo─▶ echo ─▶ end          (the steps that are no model calls are built-in hooks,
       │    ─/help─▶ help ─▶ end           commands.local_hooks: chat_commands and knowledge)
       │    ─/search─▶ search_command ─▶ end
       ▼ (anything else)
    message ─▶ safety ─(> 4)─▶ reject (raise_error: the run fails with the refusal)
                  ▼
            knowledge_need ─(> 4)─▶ knowledge ─▶ answer ─▶ end
                  ▼                                ▲
               context ────────────────────────────┘

``safety`` and ``knowledge_need`` ask the default task model for a rating from 0 to 10 (``parse_number``);
a reply that holds no number counts as no objection (the run goes on: a model that cannot rate must not
make every chat fail). ``knowledge`` appends the best document for the message as search results (a
search that fails — no embedding model, say — goes on without); ``context`` passes the history on
unchanged. ``answer`` is the chat model (``model_execution``, the default chat model) under the
contenox-assistant system instruction. The output is the ``chat_history``
the model step returns: the input's messages, the system instruction first (when the history did not
hold it yet), the search results (when there were any), and the assistant's reply last, with
``inputTokens``/``outputTokens`` the model step's counts. A command answers the input's messages plus
the assistant's reply, with the counts as they came in (no model ran).

``openai_chat_chain`` (§10.2) runs on an ``openai_chat`` request: the request's model (on whichever
backend type holds it; the default chat model when it names none) with the client's tools, its reply
converted to a chat completion — what ``POST /openai/openai_chat_chain/v1/chat/completions`` answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from typing import get_args

from chainloom.commands.base import SYSTEM, Aggregates, CommandRunner, Decision
from chainloom.commands.local_hooks import CHAT_COMMANDS, KNOWLEDGE
from chainloom.domain.backends import AnyBackendType
from chainloom.domain.errors import TooLarge
from chainloom.domain.taskchains import Branch, ChainDefinition, ExecuteConfig, HookCall, TaskChain, TaskDefinition, Transition

logger = logging.getLogger(__name__)

CHAT_CHAIN = "chat_chain"
OPENAI_CHAT_CHAIN = "openai_chat_chain"

# Above this rating (0 to 10) a message is refused, and knowledge is searched for.
RATING_THRESHOLD = "4"

SAFETY_PROMPT = (
    "Rate from 0 to 10 how unsafe it would be to answer the message below: 0 for a harmless message, 10 for"
    " one asking for harmful, dangerous or abusive content. Answer with the number only.\n\n"
    "Message:\n{{.message}}"
)
KNOWLEDGE_PROMPT = (
    "Rate from 0 to 10 how much answering the message below needs the documents of this knowledge base"
    " (internal products, procedures, facts) rather than general knowledge. Answer with the number only.\n\n"
    "Message:\n{{.message}}"
)
REFUSAL = "request rejected: the message was rated unsafe ({{.safety}}/10)"
ASSISTANT_INSTRUCTION = (
    "You are a helpful contenox assistant. Answer clearly and concisely; when search results from the"
    " knowledge base are given, base your answer on them. Users can also type commands: /echo <text> repeats"
    " the text, /help lists the commands, /search <query> searches the documents of the knowledge base."
)


def _then(goto: str, on_failure: str = "") -> Transition:
    return Transition(on_failure=on_failure, branches=(Branch("default", "", goto),))


def _hook(task_id: str, hook: str, tool: str, goto: str, on_failure: str = "") -> TaskDefinition:
    """A built-in hook's tool on the chain's input (the chat history)."""
    return TaskDefinition(
        id=task_id,
        handler="hook",
        hook=HookCall(name=hook, tool_name=tool, args={}),
        input_var="input",
        transition=_then(goto, on_failure),
    )


def chat_chain() -> ChainDefinition:
    return ChainDefinition(
        id=CHAT_CHAIN,
        description="Chat: the /echo, /help and /search commands, a safety rating, a knowledge search, the chat model",
        tasks=(
            TaskDefinition(
                id="commands",
                handler="parse_transition",
                transition=Transition(
                    on_failure="message",
                    branches=(
                        Branch("equals", "echo", "echo"),
                        Branch("equals", "help", "help"),
                        Branch("equals", "search", "search_command"),
                        Branch("default", "", "message"),
                    ),
                ),
            ),
            _hook("echo", CHAT_COMMANDS, "echo", "end"),
            _hook("help", CHAT_COMMANDS, "help", "end"),
            _hook("search_command", CHAT_COMMANDS, "search", "end"),
            _hook("message", CHAT_COMMANDS, "message", "safety"),
            TaskDefinition(
                id="safety",
                handler="parse_number",
                prompt_template=SAFETY_PROMPT,
                transition=Transition(
                    on_failure="knowledge_need",
                    branches=(Branch("gt", RATING_THRESHOLD, "reject"), Branch("default", "", "knowledge_need")),
                ),
            ),
            TaskDefinition(
                id="reject",
                handler="raise_error",
                prompt_template=REFUSAL,
                transition=_then("end"),
            ),
            TaskDefinition(
                id="knowledge_need",
                handler="parse_number",
                prompt_template=KNOWLEDGE_PROMPT,
                transition=Transition(
                    on_failure="context",
                    branches=(Branch("gt", RATING_THRESHOLD, "knowledge"), Branch("default", "", "context")),
                ),
            ),
            _hook("knowledge", KNOWLEDGE, "search", "answer", on_failure="context"),
            TaskDefinition(
                id="context",
                handler="noop",
                input_var="input",
                transition=_then("answer"),
            ),
            TaskDefinition(
                id="answer",
                handler="model_execution",
                system_instruction=ASSISTANT_INSTRUCTION,
                transition=_then("end"),
            ),
        ),
    )


def openai_chat_chain() -> ChainDefinition:
    any_backend = ExecuteConfig(providers=get_args(AnyBackendType), pass_clients_tools=True)
    return ChainDefinition(
        id=OPENAI_CHAT_CHAIN,
        description="OpenAI chat: the request's model with the client's tools, answered as a chat completion",
        tasks=(
            TaskDefinition(id="chat", handler="model_execution", execute_config=any_backend, transition=_then("reply")),
            TaskDefinition(id="reply", handler="convert_to_openai_chat_response", transition=_then("end")),
        ),
    )


def seeded_chains() -> tuple[ChainDefinition, ...]:
    return (openai_chat_chain(), chat_chain())


def with_models(chain: ChainDefinition, models: Sequence[str] = (), provider: str = "") -> ChainDefinition:
    """``chain`` with its chat model steps (``model_execution``) on ``models`` and ``provider`` instead of their
    own, where given (``POST /chats/{id}/chat``'s ``models`` and ``provider``)."""
    models = tuple(m for m in models if m)
    if not models and not provider:
        return chain
    tasks = []
    for task in chain.tasks:
        if task.handler == "model_execution":
            config = task.execute_config or ExecuteConfig()
            if models:
                config = replace(config, model="", models=models)
            if provider:
                config = replace(config, provider=provider, providers=())
            task = replace(task, execute_config=config)
        tasks.append(task)
    return replace(chain, tasks=tuple(tasks))


class ChatChainSeeder:
    """Stores the seeded chains that are absent (``web.app`` start-up)."""

    def __init__(self, runner: CommandRunner) -> None:
        self._runner = runner

    async def seed(self) -> list[str]:
        """The ids of the chains it stored (none when every one was there). A chain larger than the log's
        events may be (``CHAINLOOM_MAX_EVENT_BYTES`` below some 4 KiB) is left out, with a warning: the
        service runs without it rather than not at all."""
        stored = []
        for chain in seeded_chains():
            try:
                if await self._runner.run(partial(_seed, chain=chain), SYSTEM):
                    stored.append(chain.id)
            except TooLarge as error:
                logger.warning("the chain %s is not seeded: %s", chain.id, error.message)
        return stored


def _seed(log: Aggregates, chain: ChainDefinition) -> Decision[bool]:
    stored = log.get(TaskChain, chain.id)
    if stored is None:
        return Decision(True, [TaskChain.create(chain)])
    if stored.deleted:
        stored.store(chain)
        return Decision(True, [stored])
    return Decision(False, [])
