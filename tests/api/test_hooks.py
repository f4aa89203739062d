"""/hooks/remote, /hooks/schemas and /supported on SQLite and PostgreSQL, and ``HookRunner`` end to end
against a small hook service (an aiohttp server in the test serving /openapi.json and a few operations);
the SSRF guard at the connector."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver
from aiohttp.test_utils import TestServer

from chainloom.domain.hooks import HookFailed, HookNotUsable
from chainloom.infra.hooks import AddressRefused, GuardedConnector, HookHttp
from chainloom.web.keys import HOOK_RUNNER
from tests.api.helpers import assert_error, call

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "echo", "version": "1"},
    "paths": {
        "/health": {"get": {"operationId": "health"}},
        "/echo": {
            "post": {
                "operationId": "echo",
                "summary": "Echoes",
                "requestBody": {"content": {"application/json": {"schema": {"type": "object", "properties": {"input": {"type": "string"}}}}}},
            }
        },
        "/items/{id}": {
            "get": {
                "summary": "An item",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "verbose", "in": "query", "schema": {"type": "string"}},
                ],
            }
        },
        "/empty": {"delete": {"operationId": "empty"}},
        "/fail": {"get": {"operationId": "fail"}},
        "/slow": {"get": {"operationId": "slow"}},
        "/moved": {"get": {"operationId": "moved"}},
    },
}


class HookService:
    """The hook: serves DOCUMENT, records what each operation got."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_get("/openapi.json", self.openapi)
        app.router.add_post("/echo", self.echo)
        app.router.add_get("/items/{id}", self.item)
        app.router.add_delete("/empty", self.empty)
        app.router.add_get("/fail", self.fail)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/moved", self.moved)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(DOCUMENT)

    async def echo(self, request: web.Request) -> web.Response:
        self.seen.append({"headers": dict(request.headers), "body": await request.json(), "query": dict(request.query)})
        return web.json_response({"echo": self.seen[-1]["body"]})

    async def item(self, request: web.Request) -> web.Response:
        self.seen.append({"headers": dict(request.headers), "query": dict(request.query)})
        return web.Response(text=f"item {request.match_info['id']} verbose={request.query.get('verbose')}")

    async def empty(self, request: web.Request) -> web.Response:
        return web.Response(status=204)

    async def fail(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data")

    async def slow(self, request: web.Request) -> web.Response:
        await self.release.wait()
        return web.Response(text="late")


@pytest.fixture
async def hook_service() -> AsyncIterator[HookService]:
    service = HookService()
    await service.server.start_server()
    yield service
    service.release.set()
    await service.server.close()


def _hook(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "endpointUrl": url, "timeoutMs": 5000, **extra}


async def test_remote_hook_crud(client):
    status, first = await call(client, "POST", "/hooks/remote", _hook("first", "http://hooks.internal:8080", id="my-id"))
    assert status == 201, first
    assert first["id"] == "my-id" and first["timeoutMs"] == 5000
    assert first["properties"] == {"name": "", "value": None, "in": ""} and "headers" not in first
    second_body = _hook("second", "http://127.0.0.1:9", headers={"X-Key": "k"}, properties={"name": "token", "value": 7, "in": "query"})
    status, second = await call(client, "POST", "/hooks/remote", second_body)
    assert status == 201 and len(second["id"]) == 36
    assert second["headers"] == {"X-Key": "k"} and second["properties"] == {"name": "token", "value": 7, "in": "query"}

    assert await call(client, "GET", "/hooks/remote/my-id") == (200, first)
    assert await call(client, "GET", "/hooks/remote/by-name/second") == (200, second)
    assert await call(client, "GET", "/hooks/remote") == (200, [second, first])
    assert await call(client, "GET", "/hooks/remote", params={"limit": "1"}) == (200, [second])
    assert await call(client, "GET", "/hooks/remote", params={"cursor": second["createdAt"]}) == (200, [first])
    assert await call(client, "GET", "/supported") == (200, ["second", "first"])

    status, updated = await call(client, "PUT", "/hooks/remote/my-id", _hook("renamed", "https://x.example", id="other", timeoutMs=10))
    assert status == 200, updated
    assert (updated["id"], updated["name"], updated["timeoutMs"], updated["createdAt"]) == ("my-id", "renamed", 10, first["createdAt"])
    assert updated["updatedAt"] > first["updatedAt"]
    assert (await call(client, "GET", "/hooks/remote/by-name/first"))[0] == 404

    for method, path, body in [
        ("POST", "/hooks/remote", _hook("second", "http://a")),  # name taken
        ("POST", "/hooks/remote", _hook("third", "http://a", id="my-id")),  # id taken
        ("PUT", "/hooks/remote/my-id", _hook("second", "http://a")),
    ]:
        status, error = await call(client, method, path, body)
        assert_error(status, error, 409, "libdb: unique constraint violation")

    assert await call(client, "DELETE", "/hooks/remote/my-id") == (200, "deleted")
    for method in ("GET", "DELETE"):
        assert_error(*await call(client, method, "/hooks/remote/my-id"), 404, "libdb: not found")
    assert_error(*await call(client, "PUT", "/hooks/remote/my-id", _hook("x", "http://a")), 404, "libdb: not found")
    # A deleted hook's id and name are free again.
    status, again = await call(client, "POST", "/hooks/remote", _hook("renamed", "http://b", id="my-id"))
    assert status == 201 and again["endpointUrl"] == "http://b"
    assert await call(client, "GET", "/supported") == (200, ["renamed", "second"])


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"endpointUrl": "http://a", "timeoutMs": 1}, 422, "invalid remote hook data serverops: unprocessable entity: name is required"),
        ({"name": "n", "timeoutMs": 1}, 422, "endpoint URL is required"),
        ({"name": "n", "endpointUrl": "http://a"}, 422, "timeout must be positive"),
        (_hook("n", "http://a", timeoutMs=-5), 422, "timeout must be positive"),
        (_hook("n", "http://a", headers={"X-A": ""}), 422, "header value for X-A cannot be empty"),
        (_hook("n", "http://a", headers={"X-A": 1}), 422, "headers.X-A"),
        (_hook("n", "http://a", properties={"name": "p", "value": {"a": 1}, "in": "query"}), 422, "properties.value"),
        (_hook("n", "http://a", timeoutMs="5"), 422, "timeoutMs"),
    ],
)
async def test_remote_hook_validation(client, body, status, fragment):
    assert_error(*await call(client, "POST", "/hooks/remote", body), status, fragment)


async def test_listing_limits(client):
    for params, expected in [({"limit": "1001"}, 400), ({"limit": "x"}, 422), ({"cursor": "y"}, 422)]:
        assert_error(*await call(client, "GET", "/hooks/remote", params=params), expected)


async def test_schemas_are_fetched_live_and_failing_hooks_left_out(client, hook_service):
    for body in (_hook("live", hook_service.url), _hook("dead", "http://127.0.0.1:9"), _hook("meta", "http://169.254.169.254")):
        assert (await call(client, "POST", "/hooks/remote", body))[0] == 201
    assert await call(client, "GET", "/hooks/schemas") == (200, {"live": DOCUMENT})


@pytest.mark.in_process(reason="calls the HookRunner of the in-process service")
async def test_the_runner_discovers_and_calls_a_hook(client, hook_service):
    body = _hook(
        "echo", hook_service.url + "/", headers={"X-Key": "s3cret"}, properties={"name": "tenant", "value": 42, "in": "body"}
    )
    assert (await call(client, "POST", "/hooks/remote", body))[0] == 201
    runner = client.server.app[HOOK_RUNNER]

    tools = {tool["function"]["name"]: tool["function"] for tool in await runner.tools("echo")}
    assert sorted(tools) == ["echo", "empty", "fail", "moved", "slow", "{id}_get"]  # /health left out
    assert tools["echo"]["parameters"] == {"type": "object", "properties": {"input": {"type": "string"}}}

    value, kind = await runner.call("echo", "echo", {"input": "Trigger hook", "param1": "v1"})
    assert kind == "json"
    assert value == {"echo": {"input": "Trigger hook", "param1": "v1", "tenant": "42"}}
    seen = hook_service.seen[-1]
    assert seen["headers"]["X-Key"] == "s3cret" and seen["headers"]["Accept"] == "application/json"
    assert seen["headers"]["Content-Type"] == "application/json"

    assert await runner.call("echo", "{id}_get", {"id": "a/b", "verbose": "yes"}) == ("item a/b verbose=yes", "string")
    assert await runner.call("echo", "empty", {}) == (None, "any")

    for tool, args, cls, fragment in [
        ("fail", {}, HookFailed, "API request failed with status 500: boom"),
        ("nope", {}, HookNotUsable, "tool 'nope' not found in the OpenAPI schema"),
        ("moved", {}, HookNotUsable, "address of 169.254.169.254 refused (169.254.169.254): link-local or cloud metadata"),
    ]:
        with pytest.raises(cls) as raised:
            await runner.call("echo", tool, args)
        assert raised.value.message == f"execution failed for hook 'echo': {fragment}"
    with pytest.raises(HookNotUsable, match="execution failed for hook 'ghost': unknown hook: ghost"):
        await runner.call("ghost", "echo", {})

    hook_id = (await call(client, "GET", "/hooks/remote/by-name/echo"))[1]["id"]
    assert (await call(client, "PUT", f"/hooks/remote/{hook_id}", _hook("echo", hook_service.url, timeoutMs=100)))[0] == 200
    with pytest.raises(HookFailed, match="execution failed for hook 'echo': timed out after 100 ms"):
        await runner.call("echo", "slow", {})


@pytest.mark.in_process(reason="calls the HookRunner of the in-process service")
async def test_the_runner_refuses_metadata_addresses(client):
    assert (await call(client, "POST", "/hooks/remote", _hook("meta", "http://169.254.169.254/latest")))[0] == 201
    with pytest.raises(HookNotUsable, match="execution failed for hook 'meta': address of 169.254.169.254 refused"):
        await client.server.app[HOOK_RUNNER].call("meta", "x", {})


class _Rebinding(AbstractResolver):
    """Resolves every name to the metadata address (what a rebinding DNS answers on the second lookup)."""

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
        return [{"hostname": host, "host": "169.254.169.254", "port": port, "family": 2, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        pass


async def test_the_guard_checks_the_address_it_connects_to():
    async with aiohttp.ClientSession(connector=GuardedConnector(resolver=_Rebinding())) as session:
        with pytest.raises(AddressRefused, match="rebind.test refused"):
            await session.get("http://rebind.test/openapi.json")


async def test_link_local_addresses_are_refused_unless_allowed():
    """Allowed, nothing is filtered (no request is made: a link-local address may really answer here)."""
    guarded, allowed = HookHttp(allow_private_links=False), HookHttp(allow_private_links=True)
    try:
        with pytest.raises(AddressRefused, match="169.254.169.254 refused"):
            await guarded.request("GET", "http://169.254.169.254/latest/meta-data", {})
        with pytest.raises(AddressRefused, match="fe80::1 refused"):
            await guarded.request("GET", "http://[fe80::1]:8080/", {})
        assert not isinstance(allowed._open().connector, GuardedConnector)
    finally:
        await guarded.close()
        await allowed.close()
