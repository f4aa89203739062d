"""Table creation, serialised across processes.

Processes that start together on a fresh PostgreSQL database (API, relay,
projector workers) all run ``CREATE TABLE IF NOT EXISTS``; concurrently,
PostgreSQL lets all but one fail on its catalogue's unique index. Holding one
advisory lock while creating makes the others wait and then find the tables.
With SQLite the library's own set-up races the same way (its tracking table's
first row); a file lock beside the database file serialises it.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import make_conninfo

LOCK_NAME = "chainloom.schema"


def uses_postgres(env: Mapping[str, str]) -> bool:
    return "postgres" in env.get("PERSISTENCE_MODULE", "")


@contextmanager
def schema_lock(env: Mapping[str, str]) -> Iterator[None]:
    """Hold the schema lock for the duration."""
    if not uses_postgres(env):
        with open(f"{env['SQLITE_DBNAME']}.schema-lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)
        return
    conninfo = make_conninfo(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env.get("POSTGRES_PASSWORD", ""),
        connect_timeout=env.get("POSTGRES_CONNECT_TIMEOUT", "10"),
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOCK_NAME,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (LOCK_NAME,))


LOCK_IN_TRANSACTION = "SELECT pg_advisory_xact_lock(hashtext(?))"
