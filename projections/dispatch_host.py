"""The host functions a script calls (spec §4.5): ``sendEvent``, ``executeTask``, ``executeTaskChain``,
``callTaskChain``, bound to one execution.

``sendEvent`` does not append: the event is made, checked as any appended event is, and kept, to be
appended with the execution's ``trigger.fired`` record in the dispatcher's transaction (so an execution's
emissions are on the log exactly when its record is). The others run prompts and chains at once; what they
do outside the log (an LLM's answer, a chain run's own records) is not undone if the batch is dispatched
again after a crash.

A host function that fails raises; the sandbox hands the script ``{success: false, error}``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from eventsourcing.persistence import StoredEvent

from chainloom.commands.base import CommandContext
from chainloom.domain.errors import NotFound, Unprocessable
from chainloom.domain.eventsource.events import ExternalEvent
from chainloom.domain.taskchains import ChainDefinition
from chainloom.infra.envelope import EnvelopeMapper

# What events scripts emit look like (the reference's values).
EMITTED_SOURCE = "function_execution"
EMITTED_AGGREGATE = "function"
# The most events one execution may emit.
MAX_EMITTED = 1000


class Prompts(Protocol):
    """``commands.execution.ExecutionService``."""

    async def prompt(self, prompt: str, model_name: str | None = None, provider_type: str | None = None) -> str: ...


class Chains(Protocol):
    """``queries.taskchains.TaskChainQueries``."""

    async def definition(self, chain_id: str) -> ChainDefinition | None: ...


class Engine(Protocol):
    """``commands.tasks.TaskEngine``."""

    async def run(self, chain: ChainDefinition, value: Any, value_type: str, *, ctx: CommandContext) -> Any: ...


@dataclass(frozen=True)
class HostServices:
    prompts: Prompts
    chains: Chains
    engine: Engine


class EmittedIds:
    """``func-gen-<unix-nanoseconds>``, strictly increasing within the process (two at one instant differ)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> str:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return f"func-gen-{self._last}"


@dataclass
class ScriptHost:
    """The host functions of one execution of ``function`` for the event ``source`` (a public envelope)."""

    services: HostServices
    mapper: EnvelopeMapper
    ids: EmittedIds
    function: str
    trigger: str
    source: Mapping[str, Any]
    depth: int
    emitted: list[tuple[ExternalEvent, StoredEvent]] = field(default_factory=list)

    async def __call__(self, name: str, args: list[Any]) -> Any:
        call = _CALLS.get(name)
        if call is None:
            raise Unprocessable(f"unknown host function {name!r}")
        return await call(self, *(list(args) + [None] * 3)[:3])

    async def send_event(self, event_type: Any, data: Any, _: Any = None) -> dict[str, Any]:
        if len(self.emitted) >= MAX_EMITTED:
            raise Unprocessable(f"too many events emitted by one execution (at most {MAX_EMITTED})")
        now = time.time_ns()
        event = ExternalEvent(
            id=self.ids(),
            created_at_ns=now,
            event_type=event_type if isinstance(event_type, str) else "",
            event_source=EMITTED_SOURCE,
            aggregate_type=EMITTED_AGGREGATE,
            aggregate_id=EMITTED_AGGREGATE,
            version=1,
            data=data,
            metadata={
                "source": EMITTED_SOURCE,
                "trigger": self.trigger,
                "function": self.function,
                "caused_by": self.source["id"],
                "trigger_depth": self.depth + 1,
            },
        )
        event.validate(now)
        stored = self.mapper.to_stored_external(event)  # too large: refused here, not at the commit
        self.emitted.append((event, stored))
        return {"success": True, "event_id": event.id}

    async def execute_task(self, prompt: Any, model: Any, provider: Any) -> dict[str, Any]:
        if not isinstance(prompt, str) or not prompt:
            raise Unprocessable("prompt must be a non-empty string")
        response = await self.services.prompts.prompt(prompt, _text(model), _text(provider))
        return {"success": True, "task_id": str(uuid.uuid4()), "response": response}

    async def execute_task_chain(self, chain_id: Any, value: Any, _: Any = None) -> dict[str, Any]:
        chain = await self._chain(chain_id)
        ctx = CommandContext(actor=f"function:{self.function}", request_id=str(self.source.get("id", "")))
        run = await self.services.engine.run(chain, value if value is not None else {}, "json", ctx=ctx)
        result = run.output
        if isinstance(result, str):
            try:
                parsed = json.loads(result)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                result = parsed
        return {"success": True, "chain_id": chain.id, "result": result, "history": run.state}

    async def call_task_chain(self, chain_id: Any, value: Any = None, _: Any = None) -> dict[str, Any]:
        chain = await self._chain(chain_id)
        return {"success": True, "chain_id": chain.id}

    async def _chain(self, chain_id: Any) -> ChainDefinition:
        chain = await self.services.chains.definition(chain_id) if isinstance(chain_id, str) and chain_id else None
        if chain is None:
            raise NotFound(f"task chain {chain_id!r} not found")
        return chain


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_CALLS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "sendEvent": ScriptHost.send_event,
    "executeTask": ScriptHost.execute_task,
    "executeTaskChain": ScriptHost.execute_task_chain,
    "callTaskChain": ScriptHost.call_task_chain,
}
