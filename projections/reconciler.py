"""The reconciler: a singleton job that looks at every grouped backend's upstream server and records what it
sees (the "backend cycle" of the behaviour notes, §5).

Each cycle reads the groups, their backends and their models from the catalog's
read model (``queries.runtime.RuntimeQueries.grouped_backends``): a backend in
any group is *active*, and what it should hold is the union by name of its
groups' models. Every active backend is looked at concurrently, each under a
deadline (one dead backend never holds up the others' records), by the rules of
its type (``Observer``); what was seen is recorded through
``commands.runtime.RuntimeCommands`` as the actor ``reconciler`` — an event
only when it changed. Tracked backends that are no longer active are dropped.

When: every ``CHAINLOOM_RECONCILE_INTERVAL`` seconds (10 s), and within a second
of a change of groups, backends or models made through any process (each second
the holder compares the catalog as the read model has it — a remembered result
while the read models stand still — with what the last cycle reconciled).

Where: in exactly one process — across the workers of a ``chainloom serve`` and
across machines sharing one PostgreSQL — under the singleton lock
``reconciler`` (``infra.singleton``); the others stand by and take over within
about a second of the holder's death.

Failures: an upstream's failure is state (the backend's ``error``), not a
failure of the cycle. A cycle that fails on the store is logged and tried again
a second later.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from chainloom.commands.base import CommandContext
from chainloom.commands.runtime import RECONCILER, RuntimeCommands
from chainloom.domain.backend_state import ZERO_TIME, Observation
from chainloom.domain.errors import TooLarge
from chainloom.domain.runtime import PulledModel
from chainloom.infra.providers import safe_url
from chainloom.infra.providers.base import Endpoint, ProviderClient, ProviderError
from chainloom.infra.singleton import Lock
from chainloom.infra.timefmt import format_ns, parse_ns
from chainloom.queries.runtime import DeclaredModel, GroupedBackend, RuntimeQueries

logger = logging.getLogger(__name__)

RunBlocking = Callable[..., Awaitable[Any]]

# How often the holder compares the catalog with what it last reconciled (and a standby tries the lock).
CHECK_EVERY = 1.0
# An OpenAI or Gemini catalogue is listed again after this long (or when the API key changes).
CATALOGUE_TTL = 24 * 3600.0
# The most time one backend's look may take (listing, queueing, pruning, listing again).
BACKEND_DEADLINE = 60.0


class Clients(Protocol):
    """``infra.providers.open_clients(settings)``: a client for an endpoint, over the process's session."""

    def client(self, endpoint: Endpoint) -> ProviderClient: ...


class ApiKeys(Protocol):
    """``queries.providers.ProviderKeys``."""

    async def api_key(self, provider_type: str) -> str | None: ...


class MissingModels(Protocol):
    """``commands.downloads.DownloadCommands``: queue the pulls of models an Ollama server lacks
    (idempotent: a model already queued, pulling, or failed a moment ago is not queued again)."""

    async def queue_missing(self, backend_id: str, base_url: str, models: Sequence[str]) -> None: ...


def tagged(name: str) -> str:
    """An Ollama model name with its implicit tag (``llama3`` → ``llama3:latest``), for comparing names."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def untagged_latest(name: str) -> str:
    """``gpt-4o:latest`` → ``gpt-4o`` (OpenAI's names carry no tag)."""
    return name.removesuffix(":latest")


def _url_problem(base_url: str) -> str | None:
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as error:
        return f"parse {base_url!r}: {error}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"parse {base_url!r}: an http or https URL with a host is required"
    return None


def _time(text: str) -> str:
    """An upstream's time as the API writes times (UTC), or the zero time when it says none or no valid one."""
    try:
        return format_ns(parse_ns(text)) if text else ZERO_TIME
    except ValueError:
        return ZERO_TIME


def _entry(model: PulledModel, declared: DeclaredModel | None) -> dict[str, Any]:
    """A model an upstream holds as a ``ModelPullStatus``; capabilities from its declaration, if any."""
    entry = {
        "name": model.name,
        "model": model.model,
        "modifiedAt": _time(model.modified_at),
        "size": model.size,
        "digest": model.digest,
        "details": dict(model.details),
    }
    if declared is not None:
        entry.update(declared.capabilities())
    else:
        entry.update(
            contextLength=model.context_length,
            canChat=model.can_chat,
            canEmbed=model.can_embed,
            canPrompt=model.can_prompt,
            canStream=model.can_stream,
        )
    return entry


def _listed(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', …' if len(names) > limit else ''}]"


@dataclass
class _Catalogue:
    key_digest: str
    expires: float
    models: list[PulledModel]


class Observer:
    """Looks at one backend by the rules of its type (§5.3) and says what it saw. Never raises for an
    upstream's fault: that is the observation's ``error``."""

    def __init__(
        self,
        clients: Clients,
        keys: ApiKeys | None,
        downloads: MissingModels | None,
        prune: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clients = clients
        self._keys = keys
        self._downloads = downloads
        self._prune = prune
        self._clock = clock
        self._catalogues: dict[str, _Catalogue] = {}  # backend id → its OpenAI/Gemini catalogue

    async def observe(self, backend: GroupedBackend) -> Observation:
        kind = backend.type.lower()
        if kind == "ollama":
            return await self._ollama(backend)
        if kind == "vllm":
            return await self._vllm(backend)
        if kind in ("openai", "gemini"):
            return await self._cloud(backend, kind)
        return Observation.of([], [], f"Unsupported backend type: {backend.type}")

    def forget(self, active: set[str]) -> None:
        """Drop the remembered catalogues of backends no longer active."""
        for backend_id in set(self._catalogues) - active:
            del self._catalogues[backend_id]

    # -- ollama ----------------------------------------------------------------

    async def _ollama(self, backend: GroupedBackend) -> Observation:
        declared = [m.name for m in backend.models]
        problem = _url_problem(backend.base_url)
        if problem is not None:
            return Observation.of(declared, [], f"Invalid URL: {problem}")
        client = self._clients.client(Endpoint("ollama", backend.base_url))
        try:
            listed = await client.list_models()
        except ProviderError as error:
            return Observation.of(declared, [], str(error))
        held = {tagged(m.model or m.name) for m in listed} | {tagged(m.name) for m in listed}
        missing = [name for name in declared if tagged(name) not in held]
        if missing and self._downloads is not None:
            try:
                await self._downloads.queue_missing(backend.id, backend.base_url, missing)
            except Exception:
                logger.warning("reconciler: queueing %s for backend %s failed", missing, backend.id, exc_info=True)
        if self._prune:
            wanted = {tagged(name) for name in declared}
            undeclared = [m.name for m in listed if tagged(m.name) not in wanted]
            for name in undeclared:
                try:
                    await client.delete(name)
                    logger.info("reconciler: deleted undeclared model %s from backend %s", name, backend.id)
                except ProviderError as error:
                    logger.info("reconciler: deleting %s from backend %s failed: %s", name, backend.id, error)
            if undeclared:
                try:
                    listed = await client.list_models()
                except ProviderError as error:
                    return Observation.of(declared, [], str(error))
        by_tag = {tagged(m.name): m for m in backend.models}
        return Observation.of(declared, [_entry(m, by_tag.get(tagged(m.name))) for m in listed])

    # -- vllm ------------------------------------------------------------------

    async def _vllm(self, backend: GroupedBackend) -> Observation:
        client = self._clients.client(Endpoint("vllm", backend.base_url))
        try:
            listed = await client.list_models()
        except ProviderError as error:
            return Observation.of([], [], str(error))
        if not listed:
            return Observation.of([], [], "No models found in response")
        served = listed[0].name or listed[0].model
        declared = backend.declared(served)
        if declared is None:
            return Observation.of(
                [served], [{"model": served}], f"backend has model {served}, yet it's not declared in the configuration"
            )
        entry = {"name": served, "model": served, "modifiedAt": format_ns(declared.updated_at), **declared.capabilities()}
        return Observation.of([served], [entry])

    # -- openai, gemini ----------------------------------------------------------

    async def _cloud(self, backend: GroupedBackend, kind: str) -> Observation:
        try:
            key = await self._keys.api_key(kind) if self._keys is not None else None
        except Exception as error:  # the read store: state, so routing leaves the backend alone meanwhile
            logger.warning("reconciler: reading the %s API key failed", kind, exc_info=True)
            return Observation.of([], [], f"Failed to retrieve API key configuration: {type(error).__name__}")
        if not key:
            return Observation.of([], [], "API key not configured")
        try:
            listed = await self._catalogue(backend, kind, key)
        except ProviderError as error:
            return Observation.of([], [], str(error))
        names = [m.name for m in listed]
        if kind == "gemini":  # the upstream catalogue defines everything; declarations are not consulted
            return Observation.of(names, [_entry(m, None) | {"model": m.model or m.name} for m in listed])
        available = set(names)
        declared = {untagged_latest(m.name): m for m in backend.models}
        pulled = [
            {"name": m.name, "model": name, **m.capabilities()} for name, m in sorted(declared.items()) if name in available
        ]
        unavailable = ""
        if declared and not pulled:
            unavailable = (
                "None of the declared models are available in the OpenAI API: declared"
                f" {_listed(sorted(declared))}, available {_listed(sorted(names))}"
            )
        return Observation.of(names, pulled, unavailable)

    async def _catalogue(self, backend: GroupedBackend, kind: str, key: str) -> list[PulledModel]:
        """The upstream catalogue, remembered for 24 h while the key stays the same (only a digest of the key
        is kept)."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        now = self._clock()
        kept = self._catalogues.get(backend.id)
        if kept is not None and kept.key_digest == digest and now < kept.expires:
            return kept.models
        models = await self._clients.client(Endpoint(kind, backend.base_url, key)).list_models()
        self._catalogues[backend.id] = _Catalogue(digest, now + CATALOGUE_TTL, models)
        return models


class Reconciler:
    """The loop: holds the lock, and reconciles every interval or when the catalog changed."""

    def __init__(
        self,
        queries: RuntimeQueries,
        commands: RuntimeCommands,
        observer: Observer,
        run_blocking: RunBlocking,
        *,
        interval: float,
        lock: Lock | None = None,
        check_every: float = CHECK_EVERY,
        backend_deadline: float = BACKEND_DEADLINE,
    ) -> None:
        self._queries = queries
        self._commands = commands
        self._observer = observer
        self._run_blocking = run_blocking
        self._interval = interval
        self._lock = lock
        self._check_every = min(check_every, interval)
        self._backend_deadline = backend_deadline
        self._holding = lock is None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._cycle: asyncio.Task[None] | None = None

    @property
    def holding(self) -> bool:
        """Whether this process runs the reconciler now."""
        return self._holding

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="reconciler")

    async def stop(self) -> None:
        """Stop (a cycle in flight is cancelled: its upstream calls may take long) and give up the lock."""
        self._stopping = True
        self._wakeup.set()
        if self._cycle is not None:
            self._cycle.cancel()
        if self._task is not None:
            await self._task
            self._task = None
        if self._lock is not None:
            await self._run_blocking(self._lock.release)
            self._holding = False

    async def _run(self) -> None:
        reconciled: tuple[GroupedBackend, ...] | None = None
        due = 0.0
        failures = 0  # in a row: the first is logged with its traceback, the rest briefly
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                if await self._hold():
                    backends = await self._queries.grouped_backends()
                    if backends != reconciled or loop.time() >= due:
                        due = loop.time() + self._interval
                        self._cycle = asyncio.create_task(self.cycle(backends), name="reconciler-cycle")
                        try:
                            await self._cycle
                        finally:
                            self._cycle = None
                        reconciled = backends
                failures = 0
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
            except Exception as error:
                failures += 1
                if failures == 1:
                    logger.exception("reconciler: the cycle failed; trying again every %g s", self._check_every)
                else:
                    logger.warning("reconciler: the cycle failed again (%d in a row): %s", failures, error)
                reconciled = None
            self._wakeup.clear()
            if self._stopping:
                break
            try:
                await asyncio.wait_for(self._wakeup.wait(), self._check_every)
            except TimeoutError:
                pass

    async def _hold(self) -> bool:
        if self._lock is None:
            return True
        held = await self._run_blocking(self._lock.acquire)
        if held != self._holding:
            logger.info("reconciler: %s", "took the reconciler lock; reconciling here" if held else "lost the lock; standing by")
            self._holding = held
        return held

    async def cycle(self, backends: Sequence[GroupedBackend] | None = None) -> None:
        """Look at every grouped backend once, record what changed, drop the backends no longer grouped."""
        if backends is None:
            backends = await self._queries.grouped_backends()
        ctx = CommandContext(actor=RECONCILER, request_id=f"reconcile-{uuid.uuid4().hex[:16]}")
        active = {backend.id for backend in backends}
        self._observer.forget(active)
        outcomes = await asyncio.gather(*(self._reconcile(backend, ctx) for backend in backends), return_exceptions=True)
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        for backend_id in sorted(await self._queries.tracked() - active):
            await self._commands.drop(backend_id, ctx)
        if failures:
            raise failures[0]

    async def _reconcile(self, backend: GroupedBackend, ctx: CommandContext) -> None:
        try:
            observed = await asyncio.wait_for(self._observer.observe(backend), self._backend_deadline)
        except TimeoutError:
            observed = Observation.of(
                [m.name for m in backend.models] if backend.type.lower() == "ollama" else [],
                [],
                f"{backend.type} {safe_url(backend.base_url)}: no answer within {self._backend_deadline:g} s",
            )
        except Exception as error:  # a bug in an adapter: state too, so routing leaves the backend alone
            logger.exception("reconciler: looking at backend %s failed", backend.id)
            observed = Observation.of([], [], f"reconciliation failed: {type(error).__name__}: {error}")
        try:
            change = await self._commands.record(backend.id, observed, ctx)
        except TooLarge as error:
            change = await self._commands.record(
                backend.id, Observation.of([], [], f"the observed state is too large to record: {error.message}"), ctx
            )
        if change is not None:
            logger.info("reconciler: backend %s %s%s", backend.id, change, f": {observed.error}" if observed.error else "")
