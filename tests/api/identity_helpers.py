"""What the identity API tests share: cheap password hashes, a JWT secret, signing up and in, reading tokens."""

from __future__ import annotations

import base64
import json
from typing import Any

from chainloom.infra.settings import Settings
from tests.api.helpers import call

# argon2id at its cheapest (one pass over 64 KiB, well under a millisecond): the tests are about what the
# service does with hashes, not about their cost (infra/passwords.py says what production uses).
FAST_HASHES = {"password_hash_time_cost": 1, "password_hash_memory_kib": 64}
JWT_SECRET = "a-jwt-secret-of-32-bytes-for-tests"
FULL_USER_KEYS = {
    "id", "friendlyName", "email", "subject", "hashedPassword", "recoveryCodeHash", "salt", "createdAt", "updatedAt",
}  # fmt: skip


def identity_settings(settings: Settings, **overrides: Any) -> Settings:
    """``settings`` with cheap hashes and a JWT secret (PostgreSQL has no secrets key file to derive one from)."""
    return settings.model_copy(update={**FAST_HASHES, "jwt_secret": JWT_SECRET, **overrides})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict[str, Any]:
    """A token's payload, read without verifying it (what a client can read of it)."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


async def register(client: Any, email: str, password: str = "pw", **fields: Any) -> dict[str, Any]:
    """``POST /register``: the answer (user, token, expires_at)."""
    status, body = await call(client, "POST", "/register", {"email": email, "password": password, **fields})
    assert status == 201, body
    return body


async def login(client: Any, email: str, password: str = "pw") -> dict[str, Any]:
    status, body = await call(client, "POST", "/login", {"email": email, "password": password})
    assert status == 200, body
    return body
