"""Small HTTP helpers for API tests: every call returns (status, decoded JSON body)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient


async def call(client: TestClient, method: str, path: str, body: Any = None, **kwargs) -> tuple[int, Any]:
    if body is not None:
        kwargs["data"] = body if isinstance(body, (bytes, str)) else json.dumps(body)
        kwargs.setdefault("headers", {}).setdefault("Content-Type", "application/json")
    async with client.request(method, path, **kwargs) as response:
        raw = await response.read()
        return response.status, (json.loads(raw) if raw else None)


def assert_error(status: int, body: Any, expected_status: int, fragment: str = "") -> None:
    """The response is the contract's error envelope with the given status (and message fragment)."""
    assert status == expected_status, body
    error = body["error"]
    assert set(error) <= {"message", "type", "code", "param"}
    assert isinstance(error["message"], str) and error["type"] and error["code"]
    assert fragment in error["message"], error["message"]


async def create_backend(client: TestClient, name: str = "ollama-1", url: str | None = None, kind: str = "ollama") -> dict:
    status, body = await call(client, "POST", "/backends", {"name": name, "baseUrl": url or f"http://{name}:11434", "type": kind})
    assert status == 201, body
    return body


async def create_group(client: TestClient, name: str = "group-1", purpose: str = "testing") -> dict:
    status, body = await call(client, "POST", "/groups", {"name": name, "purposeType": purpose})
    assert status == 201, body
    return body


async def declare_model(client: TestClient, name: str = "smollm2:135m", context: int = 1024, **caps) -> dict:
    caps = caps or {"canChat": True}
    status, body = await call(client, "POST", "/models", {"model": name, "contextLength": context, **caps})
    assert status == 201, body
    return body


async def ready_status(client: TestClient) -> tuple[int, str]:
    """``GET /ready``: its status code and, when ready, its ``status`` (the body also names the process)."""
    status, body = await call(client, "GET", "/ready")
    if status == 200:
        assert body["pid"] > 0 and body["nodeInstanceID"], body
        # One process holds the projection runner; with worker processes (CHAINLOOM_TEST_WORKERS) that
        # is one of them, and the one answering may be another.
        # The other singleton jobs (reconciler, downloads) take their locks as they start, maybe after this.
        holds = set(body["holds"])
        assert holds <= {
            "projections", "reconciler", "downloads", "triggers", "leases", "blobs", "telegram-poller", "telegram-worker",
            "seals",
        }, body
        assert "projections" in holds or not isinstance(client, TestClient), body
        return status, body["status"]
    return status, body["error"]["message"]
