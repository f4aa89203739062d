"""One bootstrap for every process: a start-up that fails half-way closes what it had opened.

Checked from the outside: after the failure no worker thread of the process is
left running, no file of the data directory is still open (SQLite), and no
connection of the process is left on the server (PostgreSQL).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest
from aiohttp.test_utils import TestServer

from chainloom.infra.bootstrap import NotOpened, open_resources
from chainloom.infra.secrets import SecretsUnavailable
from chainloom.infra.settings import Settings
from chainloom.projections.kafka_worker import ProjectorWorker
from chainloom.web.app import create_app
from tests.conftest import POSTGRES_URL


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


def _open_files_under(directory: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


def _local_tcp_ports_of_this_process() -> list[int]:
    """The local ports of this process's own TCP sockets (its fds matched to /proc/net/tcp by inode)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = []
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _connections_of_this_process() -> int:
    # Counted by client port, so that services other tests started in their own processes never count.
    ports = _local_tcp_ports_of_this_process()
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND client_port = ANY(%s)",
            (ports,),
        ).fetchone()
        return int(row[0]) if row else 0


class Leaks:
    """What the process holds before a start-up; ``assert_none`` compares after it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.threads = set(threading.enumerate())
        self.connections = _connections_of_this_process() if settings.uses_postgres else 0

    def assert_none(self) -> None:
        left = [t for t in threading.enumerate() if t not in self.threads and t.is_alive()]
        assert not [t.name for t in left if t.name.startswith(("store", "writer"))], left
        if self.settings.uses_postgres:
            # A server process leaves pg_stat_activity a moment after its client closed the connection.
            deadline = time.monotonic() + 5
            while _connections_of_this_process() > self.connections and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _connections_of_this_process() <= self.connections
        else:
            assert _open_files_under(self.settings.data_dir) == []


async def test_a_bad_secrets_key_closes_the_log_and_the_read_store_it_had_opened(settings: Settings):
    bad = settings.model_copy(update={"secrets_key": "!!!not-base64"})
    leaks = Leaks(bad)
    server = TestServer(create_app(bad))
    with pytest.raises(SecretsUnavailable, match="not valid base64"):
        await server.start_server()
    await server.close()
    leaks.assert_none()


async def test_an_unreachable_postgres_fails_the_start_up_without_leaking(tmp_path: Path):
    settings = Settings(data_dir=tmp_path / "data", database_url=f"postgresql://postgres@127.0.0.1:{_closed_port()}/nope")
    leaks = Leaks(settings.model_copy(update={"database_url": ""}))  # nothing to count on a server that is not there
    server = TestServer(create_app(settings))
    with pytest.raises(Exception, match="(?i)connect"):
        await server.start_server()
    await server.close()
    leaks.assert_none()


def test_an_unreachable_broker_fails_the_projector_worker_and_closes_its_read_store(tmp_path: Path):
    """On SQLite only: the read store's closing is the same code on both stores."""
    worker_settings = Settings(
        data_dir=tmp_path / "data", kafka_bootstrap=f"127.0.0.1:{_closed_port()}", kafka_bootstrap_timeout=2
    )
    leaks = Leaks(worker_settings)
    with pytest.raises(Exception, match="(?i)bootstrap"):
        ProjectorWorker(worker_settings).run()
    leaks.assert_none()


def test_resources_not_opened_are_refused_by_name(settings: Settings):
    with open_resources(settings, read_store=False) as resources:
        assert resources.log.head() >= 0
        with pytest.raises(NotOpened, match="read store"):
            resources.store
    leaks = Leaks(settings)
    leaks.assert_none()
