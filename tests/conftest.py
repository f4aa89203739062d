"""Shared fixtures: every store test runs on SQLite and on PostgreSQL, through real HTTP.

PostgreSQL comes from ``CHAINLOOM_TEST_DATABASE_URL`` (``scripts/test`` starts a
server and sets it). Without it the PostgreSQL variants are skipped — unless
``CHAINLOOM_TEST_REQUIRE_POSTGRES=1`` (set by ``scripts/test`` and CI), when
they fail instead, so CI can never pass on SQLite alone.

``CHAINLOOM_TEST_WORKERS=N`` runs the API tests (``tests/api``) against the real
``chainloom serve`` with ``CHAINLOOM_WORKERS=N`` instead: every service an API
test starts — the ``client`` fixture's, and those a test starts on settings of
its own with ``service_for`` (an API token, size limits, SSE buffers …) — is
then that subprocess, started on the test's settings (passed as its
environment), and the test talks to it over loopback HTTP, a new connection per
request, so the workers take turns at random. Tests that cannot run so are
skipped in that mode: those marked ``in_process`` (they reach into the
in-process server, or pin the clock with freezegun), and those that use neither
``client`` nor ``service_for`` (they start no service, or a ``chainloom serve``
of their own, and run alike in-process). Everything else runs unchanged.
With ``CHAINLOOM_TEST_WORKERS_VARIANTS=first``, a test parametrized over inputs
runs its first variant only (on each store); with ``one-store``, its first variant
on one store, chosen by a stable hash of the test's name (half the scenarios run
on each store). ``scripts/test`` runs the API suite a second time so
(``CHAINLOOM_TEST_WORKERS=2``, ``one-store``).
"""

from __future__ import annotations

import base64
import itertools
import os
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import psycopg
import psycopg.sql
import pytest
from aiohttp.test_utils import TestClient, TestServer

from chainloom.infra.settings import Settings
from chainloom.web.app import create_app
from tests.integration.serve_process import ServiceClient, start_client

POSTGRES_URL = os.environ.get("CHAINLOOM_TEST_DATABASE_URL", "")
REQUIRE_POSTGRES = os.environ.get("CHAINLOOM_TEST_REQUIRE_POSTGRES") == "1"
# Worker processes of the `chainloom serve` the API tests run against; 0: the service runs in the test's process.
SERVICE_WORKERS = int(os.environ.get("CHAINLOOM_TEST_WORKERS") or 0)
# With it, "first": of a test parametrized over inputs, run only the first variant (on each store).
SERVICE_VARIANTS = os.environ.get("CHAINLOOM_TEST_WORKERS_VARIANTS", "all")
API_TESTS = Path(__file__).parent / "api"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "in_process(reason): an API test that runs only against the service in the test's own process"
        " (skipped with CHAINLOOM_TEST_WORKERS)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not SERVICE_WORKERS:
        return
    if SERVICE_VARIANTS not in ("all", "first", "one-store"):
        raise pytest.UsageError(
            f"CHAINLOOM_TEST_WORKERS_VARIANTS is 'all', 'first' or 'one-store', not {SERVICE_VARIANTS!r}"
        )
    kept: set[tuple[str, str]] = set()  # (test function, store) of which a variant runs
    stores_of = _StoreChoice()
    deselected: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("in_process")
        if API_TESTS not in item.path.parents:
            reason = "CHAINLOOM_TEST_WORKERS runs the API tests (tests/api) only"
        elif marker is not None:
            reason = f"in-process only: {marker.kwargs.get('reason') or (marker.args and marker.args[0]) or 'no reason given'}"
        elif not {"client", "service_for"} & set(item.fixturenames):
            reason = (
                "uses neither the client nor the service_for fixture (it starts no service, or a chainloom serve of"
                " its own): it runs alike in the in-process run"
            )
        else:
            if SERVICE_VARIANTS != "all":
                callspec = getattr(item, "callspec", None)
                store = callspec.params.get("store_kind", "") if callspec else ""
                function = (item.nodeid.split("[")[0], store)
                if function in kept or (SERVICE_VARIANTS == "one-store" and store != stores_of.chosen(item, items)):
                    deselected.append(item)
                kept.add(function)
            continue
        item.add_marker(pytest.mark.skip(reason=reason))
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        dropped = set(deselected)
        items[:] = [item for item in items if item not in dropped]


class _StoreChoice:
    """``one-store``: the store a test function runs on — one of those it is parametrized over, chosen by a
    stable hash of its name, so that the suite's scenarios are spread over both stores."""

    def __init__(self) -> None:
        self._stores: dict[str, list[str]] | None = None

    def chosen(self, item: pytest.Item, items: list[pytest.Item]) -> str:
        if self._stores is None:
            self._stores = {}
            for other in items:
                callspec = getattr(other, "callspec", None)
                store = callspec.params.get("store_kind", "") if callspec else ""
                stores = self._stores.setdefault(other.nodeid.split("[")[0], [])
                if store not in stores:
                    stores.append(store)
        stores = sorted(self._stores[item.nodeid.split("[")[0]])
        return stores[zlib.crc32(item.nodeid.split("[")[0].encode()) % len(stores)]


def reset_postgres(url: str) -> None:
    """Make the test database as a fresh deployment finds it: every table of a test lives in the public schema."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
        conn.execute("CREATE SCHEMA public")


# What eventsourcing writes in a tracking table when it creates it: without it the table is taken for one of an
# older layout and migrated (renamed aside) at the next start.
TRACKING_LAYOUT_ROW = "__migration__"


def empty_postgres(url: str) -> None:
    """Empty every table of the test database and restart its sequences, keeping the tables.

    For the API tests, which test what the service answers, not how it sets up its tables: creating some
    forty tables and eighty indexes again (``reset_postgres``) cost each test 0.3 s of CPU. The rows a
    service sees are those of a fresh database; only eventsourcing's note of a tracking table's layout is
    kept (``TRACKING_LAYOUT_ROW``)."""
    with psycopg.connect(url) as conn:  # one transaction
        tables = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        tracking = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.columns"
                " WHERE table_schema = 'public' AND column_name = 'application_name'"
            )
        }
        emptied = [table for table in tables if table not in tracking]
        if emptied:
            names = psycopg.sql.SQL(", ").join(psycopg.sql.Identifier(table) for table in emptied)
            conn.execute(psycopg.sql.SQL("TRUNCATE {} RESTART IDENTITY").format(names))
        for table in tracking:
            statement = psycopg.sql.SQL("DELETE FROM {} WHERE application_name <> %s")
            conn.execute(statement.format(psycopg.sql.Identifier(table)), (TRACKING_LAYOUT_ROW,))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_kind(request) -> str:
    if request.param == "postgres" and not POSTGRES_URL:
        if REQUIRE_POSTGRES:
            pytest.fail("CHAINLOOM_TEST_DATABASE_URL is not set but PostgreSQL tests are required")
        pytest.skip("no PostgreSQL (set CHAINLOOM_TEST_DATABASE_URL or run scripts/test)")
    return request.param


# Where the bots of Telegram frontends made by tests look for the Bot API, but for the fake's (tests/fakes/telegram.py):
# a closed local port (refused at once), never the real Telegram.
UNREACHABLE_TELEGRAM = "http://127.0.0.1:9"
# A fixed key sealing webhook secrets in tests (PostgreSQL has no key file to fall back on).
TEST_SECRETS_KEY = base64.b64encode(b"k" * 32).decode()


@pytest.fixture
def keyed_settings(settings: Settings) -> Settings:
    """``settings`` with a secrets key, for tests of signed webhook mappings."""
    return settings.model_copy(update={"secrets_key": TEST_SECRETS_KEY})


def make_settings(store_kind: str, data_dir: Path, **overrides) -> Settings:
    database_url = POSTGRES_URL if store_kind == "postgres" else ""
    # How long a write waits for the read models (then 503): a ceiling for a loaded 2-core CI machine, where the
    # first vector write of a process (importing lancedb) once took the 10 s this was; the tests of that wait
    # set their own.
    values = {"data_dir": data_dir, "database_url": database_url, "api_token": "", "projection_timeout": 30.0}
    values["telegram_api_base"] = UNREACHABLE_TELEGRAM  # a bot a test makes never reaches the real Telegram
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def fresh_schema() -> bool:
    """Whether a test's PostgreSQL starts with no tables (``reset_postgres``) rather than empty ones
    (``empty_postgres``); the integration tests, which start processes that set them up, override it."""
    return False


@pytest.fixture
def settings(store_kind: str, tmp_path: Path, fresh_schema: bool) -> Iterator[Settings]:
    """The test's settings on an empty store."""
    if store_kind == "postgres":
        (reset_postgres if fresh_schema else empty_postgres)(POSTGRES_URL)
    yield make_settings(store_kind, tmp_path / "data")


ServiceFor = Callable[..., AbstractAsyncContextManager["TestClient | ServiceClient"]]


@pytest.fixture
def service_for(tmp_path: Path) -> ServiceFor:
    """Start a service on given settings: ``async with service_for(settings) as client:``, ``client`` a real
    HTTP client against it — in this process (aiohttp's ``TestClient``; ``server`` is the ``TestServer`` class
    to run it with), or (CHAINLOOM_TEST_WORKERS) ``chainloom serve`` with that many worker processes, on
    exactly ``settings``, logging at ``log_level`` (its records: ``client.service.log_records()``; in this
    process they go to pytest's ``caplog``). When the block ends the service is stopped; a served one must
    not have lost a worker or logged an error."""
    logs = itertools.count()

    @asynccontextmanager
    async def start(
        settings: Settings, *, server: type[TestServer] = TestServer, log_level: str = "WARNING"
    ) -> AsyncIterator[TestClient | ServiceClient]:
        if not SERVICE_WORKERS:
            async with TestClient(server(create_app(settings))) as test_client:
                yield test_client
            return
        log_path = tmp_path / f"serve-{next(logs)}.log"
        service_client = await start_client(settings, SERVICE_WORKERS, log_path, log_level=log_level)
        try:
            yield service_client
        finally:
            await service_client.close()
            _record_answers(service_client)
        assert not service_client.problems, "\n".join(service_client.problems)

    return start


@pytest.fixture
async def client(service_for: ServiceFor, settings: Settings) -> AsyncIterator[TestClient | ServiceClient]:
    """A real HTTP client against a freshly started service on ``settings`` (see ``service_for``)."""
    async with service_for(settings) as test_client:
        yield test_client


# Per `chainloom serve` a test started (most start one): how many answers, from how many workers (X-Chainloom-Node).
_served: list[tuple[int, int, int]] = []  # (answers, distinct workers, answers without the header)


def _record_answers(service_client: ServiceClient) -> None:
    nodes = service_client.nodes
    _served.append((len(nodes), len({n for n in nodes if n}), sum(1 for n in nodes if n is None)))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not SERVICE_WORKERS or not _served:
        return
    answers = sum(a for a, _, _ in _served)
    spread = sum(1 for _, workers, _ in _served if workers >= 2)
    headerless = sum(h for _, _, h in _served)
    terminalreporter.write_sep("-", f"chainloom serve with {SERVICE_WORKERS} workers")
    terminalreporter.write_line(
        f"{len(_served)} services started by the tests, {answers} answers; {spread} services answered through"
        f" more than one worker; {headerless} answers without X-Chainloom-Node"
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run of many tests in which no service ever answered through two workers did not test the workers: fail it."""
    if SERVICE_WORKERS >= 2 and len(_served) >= 20 and not any(workers >= 2 for _, workers, _ in _served):
        print(f"\nCHAINLOOM_TEST_WORKERS={SERVICE_WORKERS}: {len(_served)} services, none answered by two workers")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
