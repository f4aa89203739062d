"""No secret anywhere it must not be: after sign-ups, sign-ins, refreshes and a password change (on SQLite and
PostgreSQL, with Kafka when a broker is configured), neither a password, nor a hash of one, nor any token
issued, nor the JWT secret appears in the log's events, in any table of either database but the credentials'
own, in a log line (everything logged, at DEBUG), or in a record of the Kafka topic."""

from __future__ import annotations

import base64
import logging
import re
import sqlite3
from contextlib import closing
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra.credentials import TABLE as CREDENTIALS
from chainloom.infra.settings import Settings
from chainloom.web.app import create_app
from tests.api.helpers import call
from tests.api.identity_helpers import JWT_SECRET, bearer, identity_settings
from tests.integration.kafka.conftest import KAFKA_BOOTSTRAP, REQUIRE_KAFKA, read_topic
from tests.integration.serve_process import log_events

FIRST_PASSWORD = "first-Pa55word-of-jane"
SECOND_PASSWORD = "second-Pa55word-of-jane"
WORKER_PASSWORD = "worker-Pa55word"


@pytest.fixture
def secured(settings: Settings, tmp_path) -> Settings:
    kafka: dict[str, Any] = {}
    if KAFKA_BOOTSTRAP:
        kafka = {"kafka_bootstrap": KAFKA_BOOTSTRAP, "kafka_topic_prefix": f"secrets{tmp_path.name[-8:]}."}
    elif REQUIRE_KAFKA:
        pytest.fail("CHAINLOOM_TEST_KAFKA_BOOTSTRAP is not set but the Kafka tests are required")
    return identity_settings(
        settings,
        security_enabled=True,
        worker_user_email="worker@x.io",
        worker_user_password=WORKER_PASSWORD,
        worker_user_account_id="worker-acct",
        **kafka,
    )


def _tables(settings: Settings) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the log's and the read store's databases, by table."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    if settings.uses_postgres:
        with psycopg.connect(settings.database_url) as connection:
            names = [r[0] for r in connection.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            for name in names:
                rows[name] = list(connection.execute(f'SELECT * FROM "{name}"'))
        return rows
    for path in (settings.data_dir / "events.sqlite", settings.data_dir / "views.sqlite"):
        with closing(sqlite3.connect(path)) as connection:
            names = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for name in names:
                rows[f"{path.stem}.{name}"] = list(connection.execute(f'SELECT * FROM "{name}"'))
    return rows


def _text(value: Any) -> str:
    """A stored value as text to search, and what it says once base64-decoded (a kept answer is stored so)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    text = str(value)
    if len(text) >= 16 and _BASE64.match(text):
        text += " " + base64.b64decode(text).decode("utf-8", "replace")
    return text


_BASE64 = re.compile(r"^(?:[A-Za-z0-9+/]{4})+(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")


def _tokens_of(response_cookies: Any) -> list[str]:
    return [morsel.value for morsel in response_cookies.values() if morsel.value]


async def _use_identity(client: TestClient) -> list[str]:
    """Sign up, in and out every way there is; the tokens the service issued."""
    tokens: list[str] = []
    status, registered = await call(
        client, "POST", "/register", {"email": "jane@x.io", "password": FIRST_PASSWORD}, headers={"Idempotency-Key": "k-1"}
    )
    assert status == 201, registered
    tokens.append(registered["token"])
    status, admin = await call(client, "POST", "/register", {"email": "admin@admin.com", "password": FIRST_PASSWORD})
    assert status == 201, admin
    tokens.append(admin["token"])
    user_id = registered["user"]["id"]
    for attempt, password in enumerate((FIRST_PASSWORD, "a wrong guess")):
        status, answer = await call(client, "POST", "/login", {"email": "jane@x.io", "password": password},
                                    headers={"Idempotency-Key": f"login-{attempt}"})  # fmt: skip
        if status == 200:
            tokens.append(answer["token"])
    status, refreshed = await call(client, "POST", "/token_refresh", {"token": tokens[0]})
    assert status == 200, refreshed
    tokens.append(refreshed["token"])
    # The admin changes Jane's password (with a key, as a retrying client would).
    status, _ = await call(client, "PUT", f"/users/{user_id}", {"password": SECOND_PASSWORD},
                           headers={**bearer(admin["token"]), "Idempotency-Key": "k-2"})  # fmt: skip
    assert status == 200
    status, _ = await call(client, "POST", "/users", {"email": "bob@x.io", "password": SECOND_PASSWORD},
                           headers={**bearer(admin["token"]), "Idempotency-Key": "k-3"})  # fmt: skip
    assert status == 201
    # The UI's way: cookies.
    async with client.post("/ui/login", json={"email": "jane@x.io", "password": SECOND_PASSWORD}) as response:
        assert response.status == 200
        tokens += _tokens_of(response.cookies)
    async with client.post("/ui/token_refresh") as response:
        assert response.status == 200
        tokens += _tokens_of(response.cookies)
    async with client.get("/ui/me") as response:
        assert response.status == 200
    status, worker = await call(client, "POST", "/login", {"email": "worker@x.io", "password": WORKER_PASSWORD})
    assert status == 200, worker
    tokens.append(worker["token"])
    return tokens


async def test_no_password_hash_or_token_is_kept_or_said_anywhere(secured: Settings, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    async with TestClient(TestServer(create_app(secured))) as client:
        tokens = await _use_identity(client)
        tables = _tables(secured)
    credentials = next(rows for name, rows in tables.items() if name.endswith(CREDENTIALS))
    hashes = [row[1] for row in credentials]
    assert len(hashes) == 4 and all(h.startswith("$argon2id$") for h in hashes)  # Jane, the admin, Bob, the worker
    secrets = {
        "a password": [FIRST_PASSWORD, SECOND_PASSWORD, WORKER_PASSWORD],
        "a hash": [*hashes, *(h.rsplit("$", 1)[1] for h in hashes)],  # the encoded hashes, and their digests alone
        "a token": [*tokens, *(t.rsplit(".", 1)[1] for t in tokens)],  # whole, and their signatures alone
        "the JWT secret": [JWT_SECRET],
    }
    assert len(set(tokens)) >= 3  # Jane's, the admin's, the worker's (issued within a second, Jane's may repeat)

    def leaks(text: str) -> list[str]:
        return [what for what, values in secrets.items() for value in values if value in text]

    # The log's events (and Kafka's copy of them).
    events = log_events(secured)
    assert {"user.registered", "user.updated", "user.signed_in", "user.sign_in_failed"} <= {e["event_type"] for e in events}
    assert [e["data"] for e in events if e["event_type"] == "user.updated"] == [
        {"email": "jane@x.io", "friendlyName": "", "passwordChanged": True}
    ]
    for event in events:
        assert not leaks(repr(event)), event
    # Every table of both databases but the credentials' own: events, read models, keys, indexes.
    for name, rows in tables.items():
        if name.endswith(CREDENTIALS):
            continue
        for row in rows:
            text = " ".join(_text(value) for value in row)
            assert not leaks(text), f"{name}: {leaks(text)}"
    # Every line logged, at every level.
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "") + repr(getattr(record, "args", ""))
        assert not leaks(text), f"{record.name}: {leaks(text)}"
    if secured.kafka_enabled:
        records: list[Any] = []
        read_topic(secured.kafka_bootstrap, secured.kafka_events_topic, lambda got: len(got) >= len(events), records=records)
        for record in records:
            text = " ".join([_text(record.key), _text(record.value), *(k + _text(v) for k, v in record.headers)])
            assert not leaks(text), leaks(text)
