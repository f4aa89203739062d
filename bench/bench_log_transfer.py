"""Export and import figures: ``log export`` and ``log import`` events/s, on SQLite (and PostgreSQL).

    .venv/bin/python bench/bench_log_transfer.py                      # SQLite
    bench/run bench/bench_log_transfer.py                             # and a durable throwaway PostgreSQL
    .venv/bin/python bench/bench_log_transfer.py --postgres URL       # … on a PostgreSQL of yours (emptied!)

A log of ``--events`` events is written first: external events of about 500 bytes (as ``POST /events``
stores them) with one backend in every ``BACKEND_EVERY`` (internal events holding unique values: the
import rebuilds their index). Then, in this process, through the functions the commands call:

- export: ``export_lines`` into a file (what ``chainloom log export > file`` does, less the progress bar);
- import: ``import_lines`` from that file into an empty log, in its one transaction, the unique index and
  the dispatch position included.

PostgreSQL (emptied first) is imported into from the SQLite export, then exported.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chainloom.domain.backends import Backend  # noqa: E402
from chainloom.domain.eventsource.events import ExternalEvent  # noqa: E402
from chainloom.infra.eventlog import EventLog  # noqa: E402
from chainloom.infra.log_transfer import export_lines, import_lines  # noqa: E402
from chainloom.infra.settings import Settings  # noqa: E402

BACKEND_EVERY = 100
WRITE_BATCH = 5_000


def fill(log: EventLog, count: int) -> None:
    """``count`` events: external ones of ~500 bytes, a backend (created, unique name and URL) now and then."""
    now = time.time_ns()
    written = 0
    while written < count:
        batch = []
        backends = []
        for i in range(written, min(written + WRITE_BATCH, count)):
            if i % BACKEND_EVERY == 0:
                backend = Backend.create(str(uuid.uuid4()), f"backend-{i}", f"http://host-{i}:11434", "ollama")
                backends.append(backend)
                continue
            event = ExternalEvent(
                id=str(uuid.uuid4()), created_at_ns=now + i, event_type="order.placed", event_source="shop",
                aggregate_type="order", aggregate_id=f"o-{i}", version=1,
                data={"order": {"id": f"o-{i}", "customer": f"c-{i % 97}", "total": i + 0.5}, "note": "x" * 330},
                metadata={"trace": f"t{i}"},
            )  # fmt: skip
            batch.append(log.mapper.to_stored_external(event))
        log.insert(batch)
        log.save(*backends, metadata={"actor": "bench"})
        written += len(batch) + len(backends)


def sqlite_log(directory: Path) -> EventLog:
    directory.mkdir(parents=True, exist_ok=True)
    return EventLog(Settings(data_dir=directory, database_url="").event_store_env())


def export_to(log: EventLog, path: Path) -> tuple[int, float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    count = 0
    with open(path, "w", encoding="utf-8") as out:
        for line in export_lines(log):
            out.write(line)
            out.write("\n")
            count += 1
    return count, time.perf_counter() - started, time.process_time() - cpu


def import_from(log: EventLog, path: Path) -> tuple[int, float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    with open(path, encoding="utf-8") as lines:
        count = import_lines(log, lines)
    return count, time.perf_counter() - started, time.process_time() - cpu


def report(label: str, count: int, seconds: float, cpu: float) -> None:
    """Wall-clock rate, and per second of this process's CPU (what the rate is on a machine nobody else loads,
    for SQLite, which runs in this process; PostgreSQL's own work is not in it)."""
    print(
        f"{label:<34} {count:>9,} events in {seconds:6.2f} s = {count / seconds:>9,.0f} events/s"
        f"   ({cpu:6.2f} s CPU here = {count / cpu:>9,.0f} events per CPU-second)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL (emptied!)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="chainloom-bench-transfer-") as scratch:
        root = Path(scratch)
        source = sqlite_log(root / "source")
        started = time.perf_counter()
        fill(source, args.events)
        size = (root / "source" / "events.sqlite").stat().st_size
        print(f"log of {source.head():,} events ({size / 2**20:.0f} MiB) written in {time.perf_counter() - started:.1f} s")
        export = root / "export.jsonl"
        count, seconds, cpu = export_to(source, export)
        report("export, SQLite", count, seconds, cpu)
        print(f"{'':<34} {export.stat().st_size / 2**20:.0f} MiB of JSON lines")
        target = sqlite_log(root / "target")
        count, seconds, cpu = import_from(target, export)
        report("import, SQLite (one transaction)", count, seconds, cpu)
        target.close()
        source.close()
        if args.postgres:
            import psycopg

            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
                conn.execute("CREATE SCHEMA public")
            postgres = EventLog(Settings(data_dir=root / "pg", database_url=args.postgres).event_store_env())
            count, seconds, cpu = import_from(postgres, export)
            report("import, PostgreSQL (COPY)", count, seconds, cpu)
            count, seconds, cpu = export_to(postgres, root / "export-pg.jsonl")
            report("export, PostgreSQL", count, seconds, cpu)
            postgres.close()


if __name__ == "__main__":
    main()
