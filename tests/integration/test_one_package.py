"""chainloom installs as one package, and logs written before it did still load.

Before, the six layers were top-level packages and stored events name their classes by those
modules (``domain.backends:Backend.Created``). ``tests/fixtures/log-before-one-package.sqlite``
is such a log, written by that code (a backend, a group, a model and their assignments, a
mapping, an ingested webhook, a posted event): the service must start on it — SQLite as it is,
PostgreSQL with the same stored events copied in — and answer what it holds.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from eventsourcing.persistence import StoredEvent

from chainloom.domain.groups import AffinityGroup
from chainloom.infra.eventlog import EventLog
from chainloom.infra.settings import Settings
from chainloom.web.app import create_app
from tests.api.helpers import call

ROOT = Path(__file__).resolve().parents[2]
OLD_LOG = ROOT / "tests" / "fixtures" / "log-before-one-package.sqlite"


def _old_stored_events(scratch: Path) -> list[StoredEvent]:
    copy = scratch / "old-events.sqlite"  # opening a log writes beside it: leave the fixture alone
    shutil.copy(OLD_LOG, copy)
    old = EventLog(Settings(data_dir=scratch)._sqlite_env(copy))
    try:
        return [
            StoredEvent(n.originator_id, n.originator_version, n.topic, n.state)
            for n in old.recorder.select_notifications(start=1, limit=1000)
        ]
    finally:
        old.close()


async def test_a_log_written_before_one_package_still_loads(settings: Settings, tmp_path: Path):
    stored = _old_stored_events(tmp_path)
    assert {e.topic.split(".")[0] for e in stored} == {"domain"}  # the old module paths
    if settings.uses_postgres:
        log = EventLog(settings.event_store_env())
        try:
            log.insert(stored)
            with log._transaction() as cursor:  # as the log was then: no index of unique values
                cursor.execute("DROP TABLE unique_values")
        finally:
            log.close()
    else:
        settings.data_dir.mkdir(parents=True)
        shutil.copy(OLD_LOG, settings.data_dir / "events.sqlite")

    log = EventLog(settings.event_store_env())
    try:
        groups = [
            log.get(AffinityGroup, e.originator_id.split(":", 1)[1])
            for e in stored
            if e.topic.endswith("AffinityGroup.Created")
        ]
    finally:
        log.close()
    [group] = [g for g in groups if g is not None and g.name == "old-group"]
    assert len(group.backend_ids) == 1 and len(group.model_ids) == 1

    async with TestClient(TestServer(create_app(settings))) as client:  # projects the old log from 0
        for _ in range(200):  # the runner catches up with the old log in the background
            status, found = await call(client, "GET", "/group-by-name/old-group")
            if status == 200:
                break
            await asyncio.sleep(0.05)
        assert status == 200, found
        status, backends = await call(client, "GET", f"/backend-affinity/{found['id']}/backends")
        assert [b["name"] for b in backends] == ["ollama-old"]
        status, events = await call(client, "GET", "/events/type", params={"event_type": "old.hooked", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"})
        assert [e["aggregate_id"] for e in events] == ["o-1"]
        # the values the old log's claims held are taken (the index is built from its aggregates)
        for path, body in (
            ("/backends", {"name": "ollama-old", "baseUrl": "http://new:11434", "type": "ollama"}),
            ("/backends", {"name": "new", "baseUrl": "http://old:11434", "type": "ollama"}),
            ("/groups", {"name": "old-group", "purposeType": "chat"}),
        ):
            status, refused = await call(client, "POST", path, body)
            assert status == 409 and "already exists" in refused["error"]["message"], (path, body, refused)
        # its claims (bookkeeping, as they were then) stay out of the public event API
        status, types = await call(client, "GET", "/events/types", params={"from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"})
        assert "old.hooked" in types and not [t for t in types if t.startswith("unique_value.")]
        status, listed = await call(client, "GET", "/events/type", params={"event_type": "unique_value.claimed", "from": "2000-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"})
        assert status == 200 and listed == []
        # new events are written under the new topics, beside the old ones
        status, _ = await call(client, "PUT", f"/groups/{found['id']}", {"name": "old-group", "purposeType": "renamed"})
        assert status == 200
    log = EventLog(settings.event_store_env())
    try:
        newest = log.recorder.select_notifications(start=log.head(), limit=1)[0]
    finally:
        log.close()
    assert newest.topic.startswith("chainloom.domain.groups:")


def test_a_clean_install_puts_nothing_but_chainloom_into_site_packages(tmp_path: Path):
    """Installed as pip installs it (not editable) into an empty target: the package, its metadata, its script."""
    target = tmp_path / "site-packages"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    entries = {p.name for p in target.iterdir()}
    assert {e for e in entries if not e.endswith(".dist-info")} - {"bin"} == {"chainloom"}, entries
    assert (target / "bin" / "chainloom").exists()
    package = {str(p.relative_to(target)) for p in (target / "chainloom").rglob("*") if p.is_file()}
    assert {"chainloom/web/app.py", "chainloom/domain/base.py", "chainloom/infra/kafka_broker/pom.xml"} <= package
    assert not [p for p in package if p.startswith(("chainloom/tests", "chainloom/bench", "chainloom/scripts"))]
