"""Shared fixtures: every store test runs on SQLite and on PostgreSQL, through real HTTP.

PostgreSQL comes from ``CHAINLOOM_TEST_DATABASE_URL`` (``scripts/test`` starts a
server and sets it). Without it the PostgreSQL variants are skipped — unless
``CHAINLOOM_TEST_REQUIRE_POSTGRES=1`` (set by ``scripts/test`` and CI), when
they fail instead, so CI can never pass on SQLite alone.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra.settings import Settings
from chainloom.web.app import create_app

POSTGRES_URL = os.environ.get("CHAINLOOM_TEST_DATABASE_URL", "")
REQUIRE_POSTGRES = os.environ.get("CHAINLOOM_TEST_REQUIRE_POSTGRES") == "1"


def reset_postgres(url: str) -> None:
    """Empty the test database: every table of a test lives in the public schema."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_kind(request) -> str:
    if request.param == "postgres" and not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("CHAINLOOM_TEST_DATABASE_URL is not set but PostgreSQL tests are required")
        pytest.skip("no PostgreSQL (set CHAINLOOM_TEST_DATABASE_URL or run scripts/test)")
    return request.param


# A fixed key sealing webhook secrets in tests (PostgreSQL has no key file to fall back on).
TEST_SECRETS_KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def keyed_settings(settings: Settings) -> Settings:
    """``settings`` with a secrets key, for tests of signed webhook mappings."""
    return settings.model_copy(update={"secrets_key": TEST_SECRETS_KEY})


def make_settings(store_kind: str, data_dir: Path, **overrides) -> Settings:
    database_url = POSTGRES_URL if store_kind == "postgres" else ""
    values = {"data_dir": data_dir, "database_url": database_url, "api_token": "", "projection_timeout": 10.0}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(store_kind: str, tmp_path: Path) -> Iterator[Settings]:
    if store_kind == "postgres":
        reset_postgres(POSTGRES_URL)
    yield make_settings(store_kind, tmp_path / "data")


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    """A real HTTP client against a freshly started service."""
    async with TestClient(TestServer(create_app(settings))) as test_client:
        yield test_client
