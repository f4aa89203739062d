"""Schema set-up is safe under any concurrency: processes set up while others project, append and set up.

Set-up reads the catalogue and creates only what is missing (``infra/schema.py``), so a process that
starts while a projector is half-way through a batch neither waits for it nor deadlocks with it, and
PostgreSQL logs no error (the library's ``CREATE TYPE`` fails at every start otherwise).
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from chainloom.domain.backends import Backend
from chainloom.infra.eventlog import EventLog
from chainloom.infra.kafka_broker import free_port
from chainloom.infra.readstore import PROJECTION_LOCK_NAME, open_read_store
from chainloom.infra.settings import Settings
from chainloom.projections.registry import all_projectors
from chainloom.projections.tracked import TrackedProjections
from tests.conftest import POSTGRES_URL
from tests.integration.kafka.conftest import Process, process_env, wait_until

POSTGRES_ONLY = pytest.mark.parametrize("store_kind", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


def in_thread(work: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def set_up_read_models(settings: Settings) -> None:
    """What an API process does at start in the distributed mode: open the read store, create what is missing."""
    store, factory = open_read_store(settings.read_store_env())
    try:
        TrackedProjections(store, all_projectors(), run_blocking=None).setup()  # type: ignore[arg-type]
    finally:
        factory.close()


def open_log(settings: Settings) -> None:
    EventLog(settings.event_store_env()).close()


@pytest.fixture
def batch(settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection in the middle of a projector's batch: the projection lock taken, rows of two read models
    written, not committed (what a projector worker's transaction holds while it applies a batch)."""
    set_up_read_models(settings)
    with psycopg.connect(POSTGRES_URL) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (PROJECTION_LOCK_NAME,))
        conn.execute(
            "INSERT INTO backends (id, name, base_url, type, created_at, updated_at)"
            " VALUES ('b-1', 'b', 'http://b', 'ollama', 1, 1)"
        )
        conn.execute("INSERT INTO event_mappings (path, config) VALUES ('/p', '{}')")
        yield conn
        conn.rollback()


@POSTGRES_ONLY
def test_set_up_does_not_wait_for_a_batch_in_flight(settings: Settings, batch: psycopg.Connection):
    thread, errors = in_thread(lambda: set_up_read_models(settings))
    thread.join(60)  # with the batch still open: set-up locks nothing that exists
    assert not thread.is_alive(), "set-up waited for a projector's open batch (it locked a table that exists)"
    assert errors == []


@POSTGRES_ONLY
def test_set_up_that_creates_waits_for_the_batch_then_creates_without_deadlock(settings: Settings, batch: psycopg.Connection):
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute("DROP INDEX models_name")
        conn.execute("DROP TABLE projection_skips")
    thread, errors = in_thread(lambda: set_up_read_models(settings))
    # The batch goes on writing both tables while set-up waits for the projection lock: no deadlock.
    batch.execute("UPDATE backends SET name = 'b2' WHERE id = 'b-1'")
    batch.execute("UPDATE event_mappings SET config = '{\"a\": 1}' WHERE path = '/p'")
    batch.commit()
    thread.join(60)
    assert not thread.is_alive() and errors == []
    with psycopg.connect(POSTGRES_URL) as conn:
        names = {row[0] for row in conn.execute("SELECT relname FROM pg_class WHERE relname IN ('models_name', 'projection_skips')")}
    assert names == {"models_name", "projection_skips"}


@POSTGRES_ONLY
def test_opening_the_log_does_not_lock_it_against_appends(settings: Settings):
    open_log(settings)
    with psycopg.connect(POSTGRES_URL) as append:
        append.execute("LOCK TABLE stored_events IN EXCLUSIVE MODE")  # what an append holds until it commits
        thread, errors = in_thread(lambda: open_log(settings))
        thread.join(60)
        assert not thread.is_alive(), "opening the log waited for an append (it locked the events table)"
        append.rollback()
    assert errors == []


@pytest.fixture
def application_role(settings: Settings) -> Iterator[tuple[Settings, str]]:
    """``settings`` as a role that may read and write chainloom's tables but create nothing (least privilege)."""
    role = f"dev_c_app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        yield settings.model_copy(update={"database_url": POSTGRES_URL.replace("postgres@", f"{role}@", 1)}), role
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


@POSTGRES_ONLY
def test_opening_a_set_up_log_creates_nothing(settings: Settings, application_role: tuple[Settings, str]):
    """PostgreSQL has no CREATE TYPE IF NOT EXISTS: the library tries and fails (a logged server error) at every
    start. Opened as a role that may not create anything, a set-up log opens: nothing was attempted."""
    restricted, role = application_role
    open_log(settings)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.execute(f"GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA public TO {role}")
        conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")
    log = EventLog(restricted.event_store_env())
    try:
        assert log.save(Backend.create("b-1", "b", "http://b", "ollama")) is not None
    finally:
        log.close()


def http_status(port: int | None, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def backlog(settings: Settings, events: int) -> None:
    """A log of ``events`` backend creations, written directly."""
    log = EventLog(settings.event_store_env())
    try:
        for start in range(0, events, 200):
            log.save(*(Backend.create(f"b-{i}", f"b{i}", f"http://b{i}", "ollama") for i in range(start, min(start + 200, events))))
    finally:
        log.close()


@POSTGRES_ONLY
@pytest.mark.timeout(300)
def test_processes_started_at_once_while_the_log_is_projected_all_come_up(settings: Settings, tmp_path: Path):
    backlog(settings, 6000)
    started: list[Process] = []

    def start(*args: str, **extra: str) -> Process:
        process = Process(list(args), process_env(settings, CHAINLOOM_WORKERS="1", CHAINLOOM_POSTGRES_POOL_SIZE="2", **extra), tmp_path / f"p{len(started)}.log")
        if args[0] == "serve":
            process.port = free_port()
            process.env |= {"CHAINLOOM_PORT": str(process.port), "CHAINLOOM_HOST": "127.0.0.1"}
        started.append(process.start())
        return process

    try:
        # One process projects the log from 0 (the embedded runner, batch after batch), while more start at
        # once and set up the same tables: APIs of the distributed mode (which watch the positions the
        # projecting process records), and an operator command.
        projector = start("serve")
        apis = [start("serve", CHAINLOOM_PROJECTIONS="kafka") for _ in range(3)]
        status = start("projections", "status")
        for api in (projector, *apis):
            def up(api: Process = api) -> bool:
                for process in (projector, *apis):
                    process.assert_running()
                try:
                    return http_status(api.port, "/ready") == 200
                except OSError:
                    return False

            wait_until(up, 180, f"the API on {api.port} to be ready", interval=0.2)
        assert status.popen is not None and status.popen.wait(120) == 0, status.output()
        for process in (projector, *apis, status):
            assert "Deadlock" not in process.output() and " ERROR " not in process.output(), process.output()[-3000:]
    finally:
        for process in started:
            process.kill()
