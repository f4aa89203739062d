"""The one settings object: every knob of chainloom, read from the environment.

Variables carry the ``CHAINLOOM_`` prefix; the reference runtime's own names
(``TOKEN``, ``PORT``, ``DATABASE_URL``, ``EMBED_MODEL`` …) are honoured too so
that a deployment of the reference moves over without edits.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chainloom.domain.taskchains import parse_duration


# Connections a PostgreSQL pool keeps open when idle (it opens more under load, up to its size).
POSTGRES_CONNECTIONS_AT_REST = 2


def _env(name: str, *reference_names: str) -> AliasChoices:
    return AliasChoices(f"CHAINLOOM_{name}", *reference_names)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", populate_by_name=True)

    host: str = Field("0.0.0.0", validation_alias=_env("HOST"))
    # API worker processes `chainloom serve` starts, sharing the port (1: one process, no supervisor).
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, validation_alias=_env("WORKERS"))
    port: int = Field(8081, validation_alias=_env("PORT", "PORT"))
    data_dir: Path = Field(Path("data"), validation_alias=_env("DATA_DIR"))
    database_url: str = Field("", validation_alias=_env("DATABASE_URL", "DATABASE_URL"))
    api_token: str = Field("", validation_alias=_env("API_TOKEN", "TOKEN"))

    embed_model: str = Field("nomic-embed-text:latest", validation_alias=_env("EMBED_MODEL", "EMBED_MODEL"))
    embed_provider: str = Field("ollama", validation_alias=_env("EMBED_PROVIDER", "EMBED_PROVIDER"))
    embed_model_context_length: int = Field(
        2048, validation_alias=_env("EMBED_MODEL_CONTEXT_LENGTH", "EMBED_MODEL_CONTEXT_LENGTH")
    )
    task_model: str = Field("phi3:3.8b", validation_alias=_env("TASK_MODEL", "TASK_MODEL"))
    task_provider: str = Field("ollama", validation_alias=_env("TASK_PROVIDER", "TASK_PROVIDER"))
    task_model_context_length: int = Field(
        2048, validation_alias=_env("TASK_MODEL_CONTEXT_LENGTH", "TASK_MODEL_CONTEXT_LENGTH")
    )
    chat_model: str = Field("phi3:3.8b", validation_alias=_env("CHAT_MODEL", "CHAT_MODEL"))
    chat_provider: str = Field("ollama", validation_alias=_env("CHAT_PROVIDER", "CHAT_PROVIDER"))
    chat_model_context_length: int = Field(
        2048, validation_alias=_env("CHAT_MODEL_CONTEXT_LENGTH", "CHAT_MODEL_CONTEXT_LENGTH")
    )
    # Namespace of the deterministic (UUIDv5) ids of models seeded at start-up.
    tenancy: uuid.UUID = Field(
        uuid.UUID("96ed1c59-ffc1-4545-b3c3-191079c68d79"), validation_alias=_env("TENANCY", "TENANCY")
    )

    # Kafka (docs/kafka.md). An empty bootstrap means no Kafka: no relay, embedded projections only.
    kafka_bootstrap: str = Field("", validation_alias=_env("KAFKA_BOOTSTRAP"))
    # Every topic's name starts with this prefix; the log is "<prefix>events".
    kafka_topic_prefix: str = Field("chainloom.", validation_alias=_env("KAFKA_TOPIC_PREFIX"))
    # Replication factor of the topic the relay creates.
    kafka_replication_factor: int = Field(1, ge=1, validation_alias=_env("KAFKA_REPLICATION_FACTOR"))
    # How long a projector worker waits for the broker at start-up before it gives up (seconds).
    kafka_bootstrap_timeout: float = Field(30.0, gt=0, validation_alias=_env("KAFKA_BOOTSTRAP_TIMEOUT"))
    # Whether `chainloom serve` runs the relay itself (else run `chainloom relay`).
    kafka_relay_in_serve: bool = Field(True, validation_alias=_env("KAFKA_RELAY_IN_SERVE"))
    # Seconds between the relay's looks at the log for writes made by other processes (on PostgreSQL
    # the log's NOTIFY wakes it instead, and it looks unasked only every 0.5 s).
    kafka_relay_poll: float = Field(0.01, gt=0, validation_alias=_env("KAFKA_RELAY_POLL"))
    # Consumer group of the projector workers (`chainloom project`); default "<prefix>projections".
    kafka_group: str = Field("", validation_alias=_env("KAFKA_GROUP"))
    # Who keeps the read models: this process following the log ("embedded"), or
    # projector workers reading Kafka ("kafka"), whose progress the API then watches.
    projections: Literal["embedded", "kafka"] = Field("embedded", validation_alias=_env("PROJECTIONS"))

    # How long a command waits for the read models to reach its write (read-your-writes).
    projection_timeout: float = Field(5.0, gt=0, validation_alias=_env("PROJECTION_TIMEOUT"))
    max_body_bytes: int = Field(100 * 1024 * 1024, gt=0, validation_alias=_env("MAX_BODY_BYTES"))
    # Largest event the log takes (its stored JSON), and so the largest JSON request body (413 above).
    max_event_bytes: int = Field(1024 * 1024, ge=1024, validation_alias=_env("MAX_EVENT_BYTES"))
    db_threads: int = Field(4, ge=1, validation_alias=_env("DB_THREADS"))
    postgres_pool_size: int = Field(10, ge=1, validation_alias=_env("POSTGRES_POOL_SIZE"))
    log_level: str = Field("INFO", validation_alias=_env("LOG_LEVEL"))
    # "json": every log line a JSON object (infra/logformat.py; the access log with request id, actor, route,
    # status, duration); "text": the lines as they always were.
    log_format: Literal["text", "json"] = Field("text", validation_alias=_env("LOG_FORMAT"))
    # Whether GET /metrics answers (Prometheus; web/metrics.py) and requests, appends and runs are counted for it;
    # off: /metrics is 404 and nothing is counted.
    metrics: bool = Field(True, validation_alias=_env("METRICS"))

    # Event source: the largest webhook body /ingest accepts (413 above).
    ingest_max_bytes: int = Field(5 * 1024 * 1024, gt=0, validation_alias=_env("INGEST_MAX_BYTES"))
    # Key (base64 of 32 bytes) sealing webhook signature secrets; empty: a key file in the data directory.
    secrets_key: str = Field("", validation_alias=_env("SECRETS_KEY"))
    # Live event streams: seconds between keep-alive comments; events buffered per slow subscriber.
    sse_keepalive: float = Field(15.0, gt=0, validation_alias=_env("SSE_KEEPALIVE"))
    sse_queue_size: int = Field(1000, ge=1, validation_alias=_env("SSE_QUEUE_SIZE"))
    # GET /log and /log/stream (web/log.py): events a filtered read looks at per request before it answers
    # where it stopped (the client goes on from there).
    log_scan_limit: int = Field(10_000, ge=1, validation_alias=_env("LOG_SCAN_LIMIT"))
    # Seconds an Idempotency-Key is kept after its first request (a retry within it is not applied again).
    idempotency_window: float = Field(24 * 3600.0, gt=0, validation_alias=_env("IDEMPOTENCY_WINDOW"))
    # Upstream LLM providers (infra/providers): seconds to open a connection; to wait for an inference
    # answer (streams and pulls: for each next piece); to wait for a model list (or a delete).
    provider_connect_timeout: float = Field(5.0, gt=0, validation_alias=_env("PROVIDER_CONNECT_TIMEOUT"))
    provider_timeout: float = Field(300.0, gt=0, validation_alias=_env("PROVIDER_TIMEOUT"))
    provider_list_timeout: float = Field(10.0, gt=0, validation_alias=_env("PROVIDER_LIST_TIMEOUT"))
    # Backend runtime: seconds between two looks of the reconciler at every grouped backend (a change of
    # groups, backends or models is looked at within a second anyway).
    reconcile_interval: float = Field(10.0, gt=0, validation_alias=_env("RECONCILE_INTERVAL"))
    # Whether this process takes part in the reconciler (one process of those that do runs it): off for API
    # processes that cannot reach the LLM servers, and in tests that compare read models while it would write.
    reconciler: bool = Field(True, validation_alias=_env("RECONCILER"))
    # Whether the reconciler deletes the models a grouped Ollama server holds that no group declares.
    # Off by default: chainloom never deletes a model from a user's Ollama server unless told to.
    prune_undeclared_models: bool = Field(False, validation_alias=_env("PRUNE_UNDECLARED_MODELS"))
    # Model downloads (projections/downloads.py): seconds before a download that failed, was cancelled or
    # dequeued (or just completed) is queued again; between the download job's looks at the queue (it looks
    # at once after a queueing in its process); between its looks for a cancel of a running pull; between
    # two writes (job) and two reads (per process with clients of GET /queue/inProgress) of pull progress.
    download_retry_after: float = Field(60.0, ge=0, validation_alias=_env("DOWNLOAD_RETRY_AFTER"))
    download_poll: float = Field(1.0, gt=0, validation_alias=_env("DOWNLOAD_POLL"))
    download_cancel_check: float = Field(0.25, gt=0, le=1.0, validation_alias=_env("DOWNLOAD_CANCEL_CHECK"))
    download_progress_interval: float = Field(0.15, gt=0, le=1.0, validation_alias=_env("DOWNLOAD_PROGRESS_INTERVAL"))
    # Whether GET /providers/{type}/config and /providers/configs answer API keys in clear when asked
    # (?reveal=true); otherwise they are always masked.
    provider_keys_revealable: bool = Field(False, validation_alias=_env("PROVIDER_KEYS_REVEALABLE"))
    # Remote hooks (infra/hooks.py): whether hooks may be reached at link-local addresses and cloud metadata
    # services (refused by default, the SSRF guard; loopback and private addresses are always allowed).
    hooks_allow_private_links: bool = Field(False, validation_alias=_env("HOOKS_ALLOW_PRIVATE_LINKS"))
    # Task chains (commands/tasks.py): task visits per run before it fails with "step limit <n> reached".
    task_step_limit: int = Field(1000, ge=1, validation_alias=_env("TASK_STEP_LIMIT"))
    # The chain POST /v1/chat/completions runs (web/openai_chat.py); empty: the built-in "chainloom-chat"
    # (the request's model, answered as a chat completion).
    default_chat_chain: str = Field("", validation_alias=_env("DEFAULT_CHAT_CHAIN"))
    # Functions and event triggers (projections/dispatch.py, infra/sandbox): whether this process takes part in
    # trigger dispatch (one process of those that do runs it); the sandbox processes the dispatcher runs scripts
    # in; a script's wall-clock limit (seconds of its own running, host calls excluded) and memory limit; how
    # deep a chain of functions emitting events that trigger functions may go; how long POST /events, /ingest
    # and /replay wait for the triggers of what they appended before answering (0: they do not wait).
    triggers: bool = Field(True, validation_alias=_env("TRIGGERS"))
    sandbox_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, validation_alias=_env("SANDBOX_WORKERS"))
    function_timeout: float = Field(5.0, gt=0, validation_alias=_env("FUNCTION_TIMEOUT"))
    function_memory_mb: int = Field(64, ge=8, validation_alias=_env("FUNCTION_MEMORY_MB"))
    function_max_depth: int = Field(16, ge=1, validation_alias=_env("FUNCTION_MAX_DEPTH"))
    trigger_wait: float = Field(10.0, ge=0, validation_alias=_env("TRIGGER_WAIT"))

    # Identity (domain/identity.py, web/identity.py). Off by default (the embedded single-user start): every
    # request acts as the admin and nothing is checked; on: every route but the public ones needs a valid
    # JWT or the API key.
    security_enabled: bool = Field(False, validation_alias=_env("SECURITY_ENABLED", "SECURITY_ENABLED"))
    # HS256 secret of the tokens (at least 16 characters); empty: derived from the secrets key, so every
    # process agrees without configuring it. Lifetime: a Go duration ("1h", "30m").
    jwt_secret: str = Field("", validation_alias=_env("JWT_SECRET", "JWT_SECRET"))
    jwt_expiry: str = Field("1h", validation_alias=_env("JWT_EXPIRY", "JWT_EXPIRY"))
    # Whether the UI's auth_token cookie is marked Secure (HTTPS only); off, as the reference (HTTP set-ups).
    cookie_secure: bool = Field(False, validation_alias=_env("COOKIE_SECURE"))
    # A registration with this e-mail gets manage on "server"; every other one none.
    admin_email: str = Field("admin@admin.com", validation_alias=_env("ADMIN_EMAIL"))
    # The worker account seeded at start-up when all three are set (its id is also its subject).
    worker_user_email: str = Field("", validation_alias=_env("WORKER_USER_EMAIL", "WORKER_USER_EMAIL"))
    worker_user_password: str = Field("", validation_alias=_env("WORKER_USER_PASSWORD", "WORKER_USER_PASSWORD"))
    worker_user_account_id: str = Field("", validation_alias=_env("WORKER_USER_ACCOUNT_ID", "WORKER_USER_ACCOUNT_ID"))
    # argon2id cost of a password hash (infra/passwords.py): passes over the memory, and KiB of memory.
    password_hash_time_cost: int = Field(2, ge=1, validation_alias=_env("PASSWORD_HASH_TIME_COST"))
    password_hash_memory_kib: int = Field(32768, ge=8, validation_alias=_env("PASSWORD_HASH_MEMORY_KIB"))

    # Documents (domain/documents.py, web/files.py): the largest upload (the contract's 100 MiB); where
    # uploaded content is kept, content-addressed by sha256 ("directory": under blob_dir, default
    # <data_dir>/blobs, shared storage when API processes run on several machines; "database": in the read
    # store's database, PostgreSQL only); how many files and folders there may be; the lancedb directory of
    # the vector index (default <data_dir>/vectors).
    max_upload_bytes: int = Field(100 * 1024 * 1024, gt=0, validation_alias=_env("MAX_UPLOAD_BYTES"))
    blob_store: Literal["directory", "database"] = Field("directory", validation_alias=_env("BLOB_STORE"))
    blob_dir: Path | None = Field(None, validation_alias=_env("BLOB_DIR"))
    file_limit: int = Field(50_000, ge=1, validation_alias=_env("FILE_LIMIT"))
    vector_dir: Path | None = Field(None, validation_alias=_env("VECTOR_DIR"))
    # Whether this process takes part in the blob sweeper (a singleton job removing content no live file names
    # any more and upload leftovers, once untouched for the removal grace: infra/blobs.py), and how often it looks.
    blob_sweeper: bool = Field(True, validation_alias=_env("BLOB_SWEEPER"))
    blob_sweep_interval: float = Field(600.0, gt=0, validation_alias=_env("BLOB_SWEEP_INTERVAL"))
    # Jobs (domain/jobs.py): a job that failed this many times is parked with its last error instead of going
    # back to pending; whether this process takes part in the lease reaper (a singleton job putting jobs
    # whose lease expired back to pending), and how often it looks.
    job_max_failures: int = Field(5, ge=1, validation_alias=_env("JOB_MAX_FAILURES"))
    lease_reaper: bool = Field(True, validation_alias=_env("LEASE_REAPER"))
    lease_reap_interval: float = Field(1.0, gt=0, validation_alias=_env("LEASE_REAP_INTERVAL"))
    # Activity (projections/activity.py, web/activity_record.py): the newest activity events kept (each of: what
    # requests did on the log, the reads and failures recorded beside it, and the alerts).
    activity_retention: int = Field(10_000, ge=1, validation_alias=_env("ACTIVITY_RETENTION"))
    # Telegram frontends (projections/telegram_bots.py): the Bot API's base URL; seconds between two polls of
    # every frontend (and between the message worker's looks for jobs, which the poller of its process also
    # wakes); whether this process takes part in the bot runtime (one process of those that do polls, one answers).
    telegram_api_base: str = Field("https://api.telegram.org", validation_alias=_env("TELEGRAM_API_BASE"))
    telegram_poll_interval: float = Field(3.0, gt=0, validation_alias=_env("TELEGRAM_POLL_INTERVAL"))
    telegram_bots: bool = Field(True, validation_alias=_env("TELEGRAM_BOTS"))
    # The log's hash chain (infra/seals.py): whether this process takes part in the sealer (a singleton job,
    # lock "seals"), and how often it looks at the log for writes no one poked it about (other API processes).
    sealer: bool = Field(True, validation_alias=_env("SEALER"))
    seal_poll: float = Field(0.2, gt=0, validation_alias=_env("SEAL_POLL"))
    # Whether this process answers reads only (`chainloom serve --read-only`, web/read_only.py): every method but
    # GET, HEAD and OPTIONS is refused (405), nothing is appended to the log, no background job that writes runs.
    read_only: bool = Field(False, validation_alias=_env("READ_ONLY"))

    @property
    def blob_directory(self) -> Path:
        return self.blob_dir if self.blob_dir is not None else self.data_dir / "blobs"

    @property
    def vector_directory(self) -> Path:
        return self.vector_dir if self.vector_dir is not None else self.data_dir / "vectors"

    def in_data_dir(self, data_dir: Path) -> Settings:
        """These settings on the embedded layout of ``data_dir`` (``chainloom serve --data-dir``, a point-in-time
        copy): its SQLite log and read store, its blobs and vectors, the read models kept in-process."""
        return self.model_copy(
            update={
                "data_dir": data_dir, "database_url": "", "blob_store": "directory", "blob_dir": None,
                "vector_dir": None, "projections": "embedded",
            }
        )  # fmt: skip

    @field_validator("embed_model", "task_model", "chat_model")
    @classmethod
    def _model_name_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a default model name must not be empty")
        return value

    @field_validator("embed_model_context_length", "task_model_context_length", "chat_model_context_length")
    @classmethod
    def _positive_context(cls, value: int) -> int:
        if value <= 0:
            raise ValueError("a default context length must be greater than 0")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _strong_enough_secret(cls, value: str) -> str:
        if value and len(value) < 16:
            raise ValueError("JWT_SECRET must be at least 16 characters (or empty: derived from the secrets key)")
        return value

    @field_validator("jwt_expiry")
    @classmethod
    def _positive_expiry(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("JWT_EXPIRY must be a positive duration (\"1h\", \"30m\")")
        return value

    @property
    def jwt_lifetime(self) -> float:
        """Seconds a token is valid."""
        return parse_duration(self.jwt_expiry)

    @property
    def worker_account_configured(self) -> bool:
        return bool(self.worker_user_email and self.worker_user_password and self.worker_user_account_id)

    @property
    def json_body_limit(self) -> int:
        """Largest JSON request body: it becomes (at most) one event."""
        return min(self.max_event_bytes, self.max_body_bytes)

    @property
    def uses_postgres(self) -> bool:
        return self.database_url.startswith(("postgres://", "postgresql://"))

    def event_store_env(self) -> dict[str, str]:
        """Environment for the eventsourcing library's infrastructure factory (the log)."""
        if self.uses_postgres:
            return self._postgres_env()
        return self._sqlite_env(self.data_dir / "events.sqlite")

    def read_store_env(self) -> dict[str, str]:
        """Environment for the read models' store: the same PostgreSQL, or a second SQLite file."""
        if self.uses_postgres:
            return self._postgres_env()
        return self._sqlite_env(self.data_dir / "views.sqlite")

    def _sqlite_env(self, path: Path) -> dict[str, str]:
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(path),
            "SQLITE_LOCK_TIMEOUT": "10",
            "ORIGINATOR_ID_TYPE": "text",
        }

    @property
    def kafka_enabled(self) -> bool:
        return bool(self.kafka_bootstrap.strip())

    @property
    def kafka_events_topic(self) -> str:
        return f"{self.kafka_topic_prefix}events"

    @property
    def kafka_projector_group(self) -> str:
        return self.kafka_group or f"{self.kafka_topic_prefix}projections"

    def _postgres_env(self) -> dict[str, str]:
        url = urlsplit(self.database_url)
        resting = min(POSTGRES_CONNECTIONS_AT_REST, self.postgres_pool_size)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/") or "chainloom",
            "POSTGRES_HOST": unquote(url.hostname or "localhost"),
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            # The library opens a pool's "size" at once and keeps it: a few at rest, the rest opened under load
            # (up to the configured size and 5 more, closed again after 10 idle minutes). Every worker process
            # has two pools: at rest, N workers hold 4 N connections rather than 20 N.
            "POSTGRES_POOL_SIZE": str(resting),
            "POSTGRES_MAX_OVERFLOW": str(self.postgres_pool_size + 5 - resting),
            "POSTGRES_CONNECT_TIMEOUT": "10",
            "POSTGRES_LOCK_TIMEOUT": "10",
            # A projection batch keeps its transaction open while it writes the vector index (lancedb files, a
            # first write importing lancedb itself): the library's 5 s ended such batches on a loaded 2-core
            # machine, as if abandoned. A transaction a crashed client left is still ended after a minute.
            "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "60",
            "ORIGINATOR_ID_TYPE": "text",
        }
