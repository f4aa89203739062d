"""/providers on SQLite and PostgreSQL through real HTTP: configure, status, configs, delete, the
provider backends — and the API key never leaves in clear (events, read models, logs, answers)."""

from __future__ import annotations

import logging

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra.eventlog import EventLog
from chainloom.infra.timefmt import parse_ns
from chainloom.web.app import create_app
from chainloom.web.keys import PROVIDER_KEYS
from tests.api.helpers import assert_error, call, create_backend
from tests.conftest import POSTGRES_URL, make_settings, reset_postgres

ZERO = "0001-01-01T00:00:00Z"
OPENAI_KEY = "sk-proj-Zq8vLmN3pRt6Yw1Xc4Bd7Fg0Hj2Kwxyz"
GEMINI_KEY = "AIzaSyD4kP9sQ2wE7rT1yU6iO3pA8sD5fG0hJk"
OPENAI_URL = "https://api.openai.com/v1"
GEMINI_URL = "https://generativelanguage.googleapis.com"


@pytest.fixture
def revealable() -> bool:
    return False


@pytest.fixture
def settings(keyed_settings, revealable):
    return keyed_settings.model_copy(update={"provider_keys_revealable": revealable})


async def configure(client, provider: str, key: str, upsert: bool | None = None) -> dict:
    body = {"apiKey": key} if upsert is None else {"apiKey": key, "upsert": upsert}
    status, answer = await call(client, "POST", f"/providers/{provider}/configure", body)
    assert status == 200, answer
    return answer


async def test_configure_status_and_masked_config(client):
    for provider in ("openai", "gemini"):
        assert await call(client, "GET", f"/providers/{provider}/status") == (
            200, {"configured": False, "updatedAt": ZERO, "provider": provider},
        )
    answer = await configure(client, "openai", OPENAI_KEY)
    assert answer["configured"] is True and answer["provider"] == "openai"
    assert answer["updatedAt"] != ZERO and parse_ns(answer["updatedAt"]) > 0
    assert await call(client, "GET", "/providers/openai/status") == (200, answer)
    assert await call(client, "GET", "/providers/gemini/status") == (
        200, {"configured": False, "updatedAt": ZERO, "provider": "gemini"},
    )
    status, config = await call(client, "GET", "/providers/openai/config")
    assert status == 200
    assert (config["APIKey"], config["Type"]) == ("sk-…wxyz", "openai")
    assert config["createdAt"] == config["updatedAt"] == answer["updatedAt"]

    await configure(client, "gemini", GEMINI_KEY, upsert=False)
    status, config = await call(client, "GET", "/providers/gemini/config")
    assert (config["APIKey"], config["Type"]) == ("…0hJk", "gemini")  # no '-' in the key: no prefix


@pytest.mark.parametrize(
    "key, masked",
    [("12345678", "…"), ("123456789", "…6789"), ("sk-abcdefghijkl", "sk-…ijkl"), ("sk-abc1234", "…1234"),
     ("verylongprefix-abcdefghijklmnop", "…mnop")],
)
async def test_keys_are_masked_without_giving_much_away(client, key, masked):
    await configure(client, "openai", key)
    status, config = await call(client, "GET", "/providers/openai/config")
    assert config["APIKey"] == masked


async def test_reveal_is_refused_unless_the_operator_enabled_it(client):
    await configure(client, "openai", OPENAI_KEY)
    status, body = await call(client, "GET", "/providers/openai/config", params={"reveal": "true"})
    assert_error(status, body, 403, "CHAINLOOM_PROVIDER_KEYS_REVEALABLE")
    status, body = await call(client, "GET", "/providers/configs", params={"reveal": "true"})
    assert_error(status, body, 403, "CHAINLOOM_PROVIDER_KEYS_REVEALABLE")
    status, body = await call(client, "GET", "/providers/openai/config", params={"reveal": "maybe"})
    assert_error(status, body, 422, "reveal")
    status, config = await call(client, "GET", "/providers/openai/config", params={"reveal": "false"})
    assert config["APIKey"] == "sk-…wxyz"


@pytest.mark.parametrize("revealable", [True])
async def test_reveal_when_enabled_and_asked(client):
    await configure(client, "openai", OPENAI_KEY)
    status, config = await call(client, "GET", "/providers/openai/config", params={"reveal": "true"})
    assert (status, config["APIKey"], config["Type"]) == (200, OPENAI_KEY, "openai")
    status, configs = await call(client, "GET", "/providers/configs", params={"reveal": "true"})
    assert [c["APIKey"] for c in configs] == [OPENAI_KEY]
    status, config = await call(client, "GET", "/providers/openai/config")  # not asked: masked
    assert config["APIKey"] == "sk-…wxyz"


async def test_upsert_rules_and_the_provider_backend(client):
    first = await configure(client, "openai", OPENAI_KEY)
    status, body = await call(client, "POST", "/providers/openai/configure", {"apiKey": "sk-other-key-000000001111"})
    assert_error(status, body, 422, "provider config already exists")
    status, backend = await call(client, "GET", "/backends/openai")
    assert status == 200
    assert {k: backend[k] for k in ("id", "name", "baseUrl", "type")} == {
        "id": "openai", "name": "openai", "baseUrl": OPENAI_URL, "type": "openai",
    }
    # a provider backend's name and base URL may change (a proxy, say), its type may not
    moved = {"name": "openai-proxy", "baseUrl": "http://127.0.0.1:9/v1", "type": "openai"}
    status, updated = await call(client, "PUT", "/backends/openai", moved)
    assert status == 200 and {k: updated[k] for k in moved} == moved
    status, body = await call(client, "PUT", "/backends/openai", moved | {"type": "vllm"})
    assert_error(status, body, 422, "stays openai")
    ollama = await create_backend(client, "ollama-1")
    status, body = await call(client, "PUT", f"/backends/{ollama['id']}", {"name": "o", "baseUrl": "http://o", "type": "openai"})
    assert_error(status, body, 422, "Type is required to be ollama or vllm")

    # upsert: a new key, a later updatedAt, the same createdAt, and the backend reset
    second = await configure(client, "openai", "sk-second-key-0000000000abcd", upsert=True)
    assert parse_ns(second["updatedAt"]) >= parse_ns(first["updatedAt"])
    status, config = await call(client, "GET", "/providers/openai/config")
    assert config["APIKey"] == "sk-…abcd" and config["createdAt"] == first["updatedAt"]
    assert config["updatedAt"] == second["updatedAt"]
    status, backend = await call(client, "GET", "/backends/openai")
    assert (backend["name"], backend["baseUrl"]) == ("openai", OPENAI_URL)
    status, backends = await call(client, "GET", "/backends")
    assert sorted(b["id"] for b in backends) == sorted(["openai", ollama["id"]])

    # deleting the configuration keeps the backend; configuring again (no upsert) leaves it alone
    await call(client, "PUT", "/backends/openai", moved)
    assert await call(client, "DELETE", "/providers/openai/config") == (200, "Provider config deleted successfully")
    assert (await call(client, "GET", "/providers/openai/status"))[1]["configured"] is False
    status, body = await call(client, "GET", "/providers/openai/config")
    assert_error(status, body, 404, "not found")
    status, body = await call(client, "DELETE", "/providers/openai/config")
    assert_error(status, body, 404)
    status, backend = await call(client, "GET", "/backends/openai")
    assert status == 200 and backend["name"] == "openai-proxy"
    await configure(client, "openai", OPENAI_KEY)
    status, backend = await call(client, "GET", "/backends/openai")
    assert backend["name"] == "openai-proxy"
    status, config = await call(client, "GET", "/providers/openai/config")
    assert config["APIKey"] == "sk-…wxyz" and parse_ns(config["createdAt"]) > parse_ns(first["updatedAt"])

    # a deleted provider backend is made again by the next configuration
    assert (await call(client, "DELETE", "/backends/openai"))[0] == 200
    assert (await call(client, "GET", "/backends/openai"))[0] == 404
    await configure(client, "openai", OPENAI_KEY, upsert=True)
    status, backend = await call(client, "GET", "/backends/openai")
    assert status == 200 and (backend["name"], backend["baseUrl"], backend["type"]) == ("openai", OPENAI_URL, "openai")


async def test_a_clash_with_an_existing_backend_is_409_and_writes_nothing(client):
    await create_backend(client, "gemini", "http://somewhere:11434")
    status, body = await call(client, "POST", "/providers/gemini/configure", {"apiKey": GEMINI_KEY})
    assert_error(status, body, 409, "backend name 'gemini' already exists")
    await create_backend(client, "proxy", OPENAI_URL, kind="vllm")
    status, body = await call(client, "POST", "/providers/openai/configure", {"apiKey": OPENAI_KEY})
    assert_error(status, body, 409, f"backend baseUrl '{OPENAI_URL}' already exists")
    for provider in ("openai", "gemini"):
        assert (await call(client, "GET", f"/providers/{provider}/status"))[1]["configured"] is False
        assert (await call(client, "GET", f"/backends/{provider}"))[0] == 404
    assert await call(client, "GET", "/providers/configs") == (200, [])
    # POST /backends still takes only ollama and vllm
    status, body = await call(client, "POST", "/backends", {"name": "x", "baseUrl": "http://x", "type": "openai"})
    assert_error(status, body, 422, "Type is required to be ollama or vllm")


async def test_refusals(client):
    for payload, fragment in [
        ({}, "api key is required"),
        ({"apiKey": ""}, "api key is required"),
        ({"upsert": True}, "api key is required"),
        ({"apiKey": "sk has spaces"}, "printable ASCII"),
        ({"apiKey": 42}, "apiKey"),
        ({"apiKey": "sk-abc", "upsert": "yes"}, "upsert"),
        ("not json", "invalid JSON"),
        ("", "empty request body"),
        ([1], "JSON object"),
    ]:
        status, body = await call(client, "POST", "/providers/openai/configure", payload)
        assert_error(status, body, 422, fragment)
    assert (await call(client, "GET", "/providers/openai/status"))[1]["configured"] is False
    for method, path in [
        ("GET", "/providers/ollama/status"),
        ("GET", "/providers/ollama/config"),
        ("DELETE", "/providers/ollama/config"),
        ("GET", "/providers/openai/config"),
        ("DELETE", "/providers/gemini/config"),
    ]:
        status, body = await call(client, method, path)
        assert_error(status, body, 404)
    status, body = await call(client, "POST", "/providers/ollama/configure", {"apiKey": "k"})
    assert status in (404, 405) and "error" in body
    status, body = await call(client, "GET", "/providers/configs", params={"limit": "x"})
    assert_error(status, body, 422, "invalid limit format")
    status, body = await call(client, "GET", "/providers/configs", params={"cursor": "yesterday"})
    assert_error(status, body, 422, "invalid cursor format")


async def test_configs_are_listed_newest_first_a_page_at_a_time(client):
    assert await call(client, "GET", "/providers/configs") == (200, [])
    await configure(client, "openai", OPENAI_KEY)
    await configure(client, "gemini", GEMINI_KEY)
    status, configs = await call(client, "GET", "/providers/configs")
    assert status == 200 and [(c["Type"], c["APIKey"]) for c in configs] == [("gemini", "…0hJk"), ("openai", "sk-…wxyz")]
    status, page = await call(client, "GET", "/providers/configs", params={"limit": "1"})
    assert [c["Type"] for c in page] == ["gemini"]
    status, page = await call(client, "GET", "/providers/configs", params={"limit": "1", "cursor": page[-1]["createdAt"]})
    assert [c["Type"] for c in page] == ["openai"]
    status, page = await call(client, "GET", "/providers/configs", params={"cursor": page[-1]["createdAt"]})
    assert page == []
    await call(client, "DELETE", "/providers/gemini/config")
    status, configs = await call(client, "GET", "/providers/configs")
    assert [c["Type"] for c in configs] == ["openai"]


def _read_store_text(settings) -> bytes:
    """Every byte the read models (and, on SQLite, the whole data directory) hold."""
    if not settings.uses_postgres:
        return b"".join(path.read_bytes() for path in settings.data_dir.rglob("*") if path.is_file())
    chunks = []
    with psycopg.connect(settings.database_url) as connection:
        tables = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            for (row,) in connection.execute(f'SELECT row_to_json(t)::text FROM "{table}" t').fetchall():
                chunks.append(row.encode())
    return b"\n".join(chunks)


async def test_the_key_never_leaks(client, settings, caplog):
    caplog.set_level(logging.DEBUG)
    answers = [
        await configure(client, "openai", OPENAI_KEY),
        await configure(client, "openai", OPENAI_KEY, upsert=True),
        await configure(client, "gemini", GEMINI_KEY),
    ]
    answers += [(await call(client, "GET", path))[1] for path in (
        "/providers/openai/config", "/providers/gemini/config", "/providers/configs",
        "/providers/openai/status", "/events/type?event_type=provider.configured",
        "/events/type?event_type=provider.reconfigured",
    )]
    # kept for retries: the answer and a fingerprint of the request, not the key
    status, kept = await call(client, "POST", "/providers/gemini/configure", {"apiKey": GEMINI_KEY, "upsert": True},
                              headers={"Idempotency-Key": "configure-gemini-1"})
    assert status == 200
    status, refused = await call(client, "POST", "/providers/gemini/configure", {"apiKey": GEMINI_KEY})
    assert_error(status, refused, 422, "already exists")
    answers += [kept, refused]
    await call(client, "DELETE", "/providers/gemini/config")
    secrets = [OPENAI_KEY, GEMINI_KEY]
    forms = [form for key in secrets for form in (key.encode(), key.encode().hex().encode(), key[4:-4].encode())]

    log = EventLog(settings.event_store_env())
    try:
        notifications = log.recorder.select_notifications(start=1, limit=10_000)
    finally:
        log.close()
    stored = b"\n".join(n.state for n in notifications)
    assert b'"event_type":"provider.configured"' in stored and b"sealedKey" in stored and b"keyHint" in stored
    assert b'"event_type":"provider.config_deleted"' in stored
    read_models = _read_store_text(settings)
    assert b"sk-\xe2\x80\xa6wxyz" in read_models or b"sk-\\u2026wxyz" in read_models  # the hint is kept
    logs = caplog.text.encode()
    text_of_answers = repr(answers).encode()
    for form in forms:
        assert form not in stored
        assert form not in read_models
        assert form not in logs
        assert form not in text_of_answers


@pytest.mark.in_process(reason="reaches the process's ProviderKeys")
async def test_provider_keys_open_the_sealed_key(client):
    keys = client.server.app[PROVIDER_KEYS]
    assert await keys.api_key("openai") is None
    await configure(client, "openai", OPENAI_KEY)
    assert await keys.api_key("openai") == OPENAI_KEY
    assert await keys.api_key("gemini") is None
    assert await keys.api_key("ollama") is None
    await configure(client, "openai", "sk-second-key-0000000000abcd", upsert=True)
    assert await keys.api_key("openai") == "sk-second-key-0000000000abcd"
    await call(client, "DELETE", "/providers/openai/config")
    assert await keys.api_key("openai") is None


async def test_without_a_secrets_key_postgres_refuses_to_configure(tmp_path):
    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL")
    reset_postgres(POSTGRES_URL)
    async with TestClient(TestServer(create_app(make_settings("postgres", tmp_path)))) as client:
        status, body = await call(client, "POST", "/providers/openai/configure", {"apiKey": OPENAI_KEY})
        assert_error(status, body, 422, "CHAINLOOM_SECRETS_KEY")
        assert (await call(client, "GET", "/providers/openai/status"))[1]["configured"] is False
