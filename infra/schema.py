"""Table creation, serialised across processes, and only of what is missing.

Processes that start together on a fresh PostgreSQL database (API, relay,
projector workers) all set up the same tables; concurrently, PostgreSQL lets
all but one fail on its catalogue's unique index. Holding one advisory lock
while creating makes the others wait and then find the tables. With SQLite the
library's own set-up races the same way (its tracking table's first row); a
file lock beside the database file serialises it.

Set-up also runs while other processes use the tables (a second API started
while a projector worker projects the log), so it looks before it creates:
what exists is left alone. ``CREATE INDEX IF NOT EXISTS`` on an existing index
still locks its table against writers, and two such statements in one
transaction can deadlock with a writer of both tables; PostgreSQL has no
``CREATE TYPE IF NOT EXISTS``, and the library's attempt at it fails (and is
logged by the server as an error) at every start. Only missing objects are
created, under the lock, after looking again.
"""

from __future__ import annotations

import fcntl
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import psycopg
from eventsourcing.postgres import PostgresApplicationRecorder
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

# -- what a statement creates, and what of it exists ------------------------------------

_CREATES = re.compile(r"^\s*CREATE\s+(?:UNIQUE\s+)?(?:TABLE|INDEX)\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.IGNORECASE)

# The tables and indexes of the current schema (PostgreSQL) or of the database (SQLite).
POSTGRES_RELATIONS = (
    "SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'i', 'I')"
)
SQLITE_RELATIONS = "SELECT name FROM sqlite_master WHERE type IN ('table', 'index')"


def created_name(statement: str) -> str:
    """The table or index a ``CREATE TABLE|INDEX IF NOT EXISTS name`` statement creates."""
    match = _CREATES.match(statement)
    if match is None:
        raise ValueError(f"not a CREATE TABLE|INDEX IF NOT EXISTS statement: {statement[:80]}")
    return match.group(1)


def missing(statements: Iterable[str], existing: Iterable[str]) -> list[str]:
    """The statements whose table or index is not among ``existing`` (names compare as PostgreSQL folds them)."""
    present = {name.lower() for name in existing}
    return [statement for statement in statements if created_name(statement).lower() not in present]


# -- the log's recorder -----------------------------------------------------------------


class LogRecorder(PostgresApplicationRecorder):
    """The library's PostgreSQL recorder of the log, creating only what is missing, in one transaction.

    The library runs ``CREATE TYPE`` at every start and swallows the duplicate-object error, which the
    server logs; its ``CREATE UNIQUE INDEX IF NOT EXISTS`` locks the log against appends while it looks.
    Here the catalogue is read first, under the schema lock the caller holds (``EventLog``), and a
    statement runs only when its object is absent; nothing is swallowed, so a failure is a real one.
    """

    def create_table(self) -> None:
        schema = self.datastore.schema
        with self.datastore.transaction(commit=True) as curs:
            types = {
                row["typname"]
                for row in curs.execute(
                    "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = %s",
                    (schema,),
                ).fetchall()
            }
            relations = {
                row["relname"]
                for row in curs.execute(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s",
                    (schema,),
                ).fetchall()
            }
            wanted = {self.events_table_name, self.notification_id_index_name}
            for statement in self.sql_create_statements:
                text = statement.as_string()
                if "CREATE TYPE" in text:
                    if self.stored_event_type_name in types:
                        continue
                elif "IF NOT EXISTS" in text:
                    if wanted <= relations:
                        continue  # the table and its index are there: nothing to lock the log for
                elif "CREATE OR REPLACE FUNCTION" in text and not self.datastore.enable_db_functions:
                    continue  # used only with the library's database functions, which chainloom leaves off
                curs.execute(statement, prepare=False)
        self.datastore.register_type_adapters()


def log_env(env: Mapping[str, str]) -> dict[str, str]:
    """The factory environment of the log: on PostgreSQL, with the recorder above."""
    opened = dict(env)
    if uses_postgres(env):
        opened["APPLICATION_RECORDER_TOPIC"] = f"{LogRecorder.__module__}:{LogRecorder.__qualname__}"
    return opened
