"""Commands of the remote hooks (create, update, delete) and ``HookRunner``, which discovers and calls them.

    runner = HookRunner(hook_queries, hook_http)
    tools = await runner.tools("echo")                           # OpenAI tool dicts, names not prefixed
    value, kind = await runner.call("echo", "echo", {"input": "hi"})  # kind: "json" | "string" | "any"

Each ``tools`` or ``call`` fetches the hook's schema (``<endpointUrl>/openapi.json``) anew, as the
reference does: a changed service is seen at once, at the cost of one more request per call. The whole
of it — fetch and call — runs under the hook's ``timeoutMs``.

A name the built-in hooks (``commands.local_hooks.LocalHooks``) hold is served by them, in this process,
before any remote hook of that name.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decision
from chainloom.commands.local_hooks import LocalHooks
from chainloom.domain.errors import DomainError, NotFound, Unprocessable
from chainloom.domain.hook_openapi import answer_value, build_request, find_operation, tool_list
from chainloom.domain.hooks import HookFailed, HookNotUsable, HookSpec, RemoteHook, execution_failed
from chainloom.domain.uniqueness import HOOK_NAME, ensure_free
from chainloom.infra.hooks import AddressRefused, HookHttp
from chainloom.queries.hooks import hook_spec

Json = dict[str, Any]


class HookCommands:
    def __init__(self, runner: CommandRunner, new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> None:
        self._runner = runner
        self._new_id = new_id

    async def create(self, spec: HookSpec, hook_id: str, ctx: CommandContext) -> str:
        """Create a hook under ``hook_id`` (empty: a new UUID); a deleted hook's id is created again."""

        def decide(log: Aggregates) -> Decision[str]:
            spec.validate()
            key = hook_id or self._new_id()
            hook = log.get(RemoteHook, key)
            if hook is None:
                hook = RemoteHook.create(key, spec)
            else:
                hook.recreate(spec)
            ensure_free(log.owner_of, HOOK_NAME, spec.name, key, f"hook name '{spec.name}'")
            return Decision(key, [hook])

        return await self._runner.run(decide, ctx)

    async def update(self, hook_id: str, spec: HookSpec, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            hook = log.get(RemoteHook, hook_id)
            if hook is None:
                raise NotFound("libdb: not found")
            hook.update(spec)
            ensure_free(log.owner_of, HOOK_NAME, spec.name, hook_id, f"hook name '{spec.name}'")
            return Decision(None, [hook])

        await self._runner.run(decide, ctx)

    async def delete(self, hook_id: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            hook = log.get(RemoteHook, hook_id)
            if hook is None:
                raise NotFound("libdb: not found")
            hook.delete()
            return Decision(None, [hook])

        await self._runner.run(decide, ctx)


class HookRecords(Protocol):
    """Where the runner finds a hook by name (``queries.hooks.HookQueries``)."""

    async def find(self, name: str) -> Json | None: ...


class HookRunner:
    """Discovers and calls remote hooks (the notes' §8.3 and §8.4).

    ``call`` raises ``HookFailed`` with ``execution failed for hook '<name>': <cause>`` — a
    ``HookNotUsable`` (422) for an unknown hook, an unknown tool or an address the SSRF guard refuses,
    a plain ``HookFailed`` (502) when the service fails. ``tools`` raises the same classes with the
    cause alone as the message (the engine words it ``failed to get tools for hook <name>: <cause>``).
    """

    def __init__(self, hooks: HookRecords, http: HookHttp, local: LocalHooks | None = None) -> None:
        self._hooks = hooks
        self._http = http
        self.local = local if local is not None else LocalHooks()

    async def call(self, hook_name: str, tool_name: str, args: Mapping[str, Any]) -> tuple[Any, str]:
        """Call the operation ``tool_name`` of hook ``hook_name`` with ``args``, the whole argument map
        (a hook task puts its input under ``input``); (value, type) with type ``json``, ``string`` or ``any``
        — or any type name a built-in hook answers (``chat_history``)."""
        local = self.local.get(hook_name)
        if local is not None:
            try:
                return await local.call(tool_name, args)
            except HookFailed as error:
                raise execution_failed(hook_name, error.cause, usable=not isinstance(error, HookNotUsable)) from None
            except DomainError as error:
                raise execution_failed(hook_name, error.message, usable=not isinstance(error, Unprocessable)) from None
        try:
            spec = await self._spec(hook_name)
        except HookFailed as error:
            raise execution_failed(hook_name, error.cause, usable=False) from None
        try:
            async with asyncio.timeout(spec.timeout_ms / 1000):
                document = await self._schema(spec)
                operation = find_operation(document, tool_name)
                if operation is None:
                    raise HookNotUsable(f"tool '{tool_name}' not found in the OpenAPI schema")
                try:
                    request = build_request(spec, operation, args)
                except (TypeError, ValueError) as error:
                    raise HookNotUsable(f"the arguments cannot be sent: {error}") from None
                status, content_type, body = await self._fetch(request.method, request.url, request.headers, request.body)
                try:
                    return answer_value(status, content_type, body)
                except ValueError as error:
                    raise HookFailed(str(error)) from None
        except HookFailed as error:
            raise execution_failed(hook_name, error.cause, usable=not isinstance(error, HookNotUsable)) from None
        except TimeoutError:
            raise execution_failed(hook_name, f"timed out after {spec.timeout_ms} ms") from None

    async def tools(self, hook_name: str) -> list[Json]:
        """The tools hook ``hook_name`` offers (OpenAI function tools; names not prefixed)."""
        local = self.local.get(hook_name)
        if local is not None:
            return local.tools()
        spec = await self._spec(hook_name)
        try:
            async with asyncio.timeout(spec.timeout_ms / 1000):
                document = await self._schema(spec)
        except TimeoutError:
            raise HookFailed(f"timed out after {spec.timeout_ms} ms", hook=hook_name) from None
        return tool_list(document, spec.properties)

    async def schema(self, hook: Json) -> Any:
        """The OpenAPI document a hook (as the API answers it) serves, as fetched (``GET /hooks/schemas``)."""
        spec = hook_spec(hook)
        try:
            async with asyncio.timeout(spec.timeout_ms / 1000):
                return await self._schema(spec)
        except TimeoutError:
            raise HookFailed(f"timed out after {spec.timeout_ms} ms", hook=spec.name) from None

    async def _spec(self, hook_name: str) -> HookSpec:
        hook = await self._hooks.find(hook_name)
        if hook is None:
            raise HookNotUsable(f"unknown hook: {hook_name}", hook=hook_name)
        return hook_spec(hook)

    async def _schema(self, spec: HookSpec) -> Any:
        url = spec.endpoint_url.rstrip("/") + "/openapi.json"
        status, _, body = await self._fetch("GET", url, {"Accept": "application/json"}, None)
        if status != 200:
            raise HookFailed(f"failed to fetch the OpenAPI schema from {url}: status {status}", hook=spec.name)
        try:
            document = json.loads(body)
        except ValueError as error:
            raise HookFailed(f"failed to decode the OpenAPI schema from {url}: {error}", hook=spec.name) from None
        if not isinstance(document, dict):
            raise HookFailed(f"the OpenAPI schema from {url} is not a JSON object", hook=spec.name)
        return document

    async def _fetch(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> tuple[int, str, bytes]:
        try:
            return await self._http.request(method, url, headers, body)
        except AddressRefused as error:
            raise HookNotUsable(str(error)) from None
        except (aiohttp.ClientError, OSError, ValueError) as error:
            raise HookFailed(f"{method} {_safe(url)}: {_describe(error)}") from None


def _safe(url: str) -> str:
    """The URL without its query (where a key could hide)."""
    return url.split("?", 1)[0]


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
