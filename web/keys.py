"""Typed application state: what handlers may reach."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from chainloom.commands.catalog import CatalogCommands
from chainloom.commands.chats import ChatCommands
from chainloom.commands.downloads import DownloadCommands
from chainloom.commands.eventsource import EventSourceCommands
from chainloom.commands.execution import ExecutionService
from chainloom.commands.files import FileCommands
from chainloom.commands.functions import FunctionCommands
from chainloom.commands.identity import IdentityCommands
from chainloom.commands.indexing import IndexCommands
from chainloom.commands.jobs import JobCommands
from chainloom.commands.tasks import TaskEngine
from chainloom.commands.hooks import HookCommands, HookRunner
from chainloom.commands.providers import ProviderCommands
from chainloom.commands.taskchains import TaskChainCommands
from chainloom.commands.telegram import TelegramCommands
from chainloom.infra.blobs import BlobStore
from chainloom.infra.kafka_relay import RelayService
from chainloom.infra.settings import Settings
from chainloom.infra.tokens import Tokens
from chainloom.projections.dispatch import TriggerDispatcher, TriggerWaits
from chainloom.projections.downloads import DownloadJob, ProgressFeed
from chainloom.projections.lease_reaper import LeaseReaper
from chainloom.projections.reconciler import Reconciler
from chainloom.projections.telegram_bots import TelegramPoller, TelegramWorker
from chainloom.projections.waits import ReadModels
from chainloom.queries.activity import ActivityQueries
from chainloom.queries.catalog import CatalogQueries
from chainloom.queries.chats import ChatQueries
from chainloom.queries.downloads import DownloadQueries
from chainloom.queries.eventsource import EventSourceQueries
from chainloom.queries.files import FileQueries
from chainloom.queries.functions import FunctionQueries
from chainloom.queries.identity import IdentityQueries
from chainloom.queries.jobs import JobQueries
from chainloom.queries.hooks import HookQueries
from chainloom.queries.providers import ProviderKeys, ProviderQueries
from chainloom.queries.runtime import RuntimeQueries
from chainloom.queries.search import SearchQueries
from chainloom.queries.task_runs import TaskRunQueries
from chainloom.queries.taskchains import TaskChainQueries
from chainloom.queries.telegram import TelegramQueries
from chainloom.web.activity_record import ACTIVITY_RECORDER  # noqa: F401 — this process's reads and failures
from chainloom.web.sse import EventHub
from chainloom.web.workers import Siblings

SETTINGS = web.AppKey("settings", Settings)
CATALOG_COMMANDS = web.AppKey("catalog_commands", CatalogCommands)
CATALOG_QUERIES = web.AppKey("catalog_queries", CatalogQueries)
PROJECTIONS = web.AppKey("projections", ReadModels)  # kept here, or by workers elsewhere
EVENTSOURCE_COMMANDS = web.AppKey("eventsource_commands", EventSourceCommands)
EVENTSOURCE_QUERIES = web.AppKey("eventsource_queries", EventSourceQueries)
EVENT_HUB = web.AppKey("event_hub", EventHub)
SIBLINGS = web.AppKey("siblings", Siblings)  # only in one of several worker processes
LOG_HEAD: web.AppKey[Callable[[], Awaitable[int]]] = web.AppKey("log_head")  # the log's head position, now
PROVIDER_COMMANDS = web.AppKey("provider_commands", ProviderCommands)
PROVIDER_QUERIES = web.AppKey("provider_queries", ProviderQueries)
PROVIDER_KEYS = web.AppKey("provider_keys", ProviderKeys)  # API keys in clear, for calling providers
EXECUTION = web.AppKey("execution", ExecutionService)  # routes prompts, chats and embeddings to backends
RUNTIME_QUERIES = web.AppKey("runtime_queries", RuntimeQueries)  # the backends' observed state (/state, routing)
DOWNLOAD_COMMANDS = web.AppKey("download_commands", DownloadCommands)  # also the reconciler's queue_missing
DOWNLOAD_QUERIES = web.AppKey("download_queries", DownloadQueries)
DOWNLOAD_PROGRESS = web.AppKey("download_progress", ProgressFeed)  # pull progress, from whichever process pulls
DOWNLOAD_JOB = web.AppKey("download_job", DownloadJob)  # pulls queued models while this process holds its lock
RECONCILER = web.AppKey("reconciler", Reconciler)  # looks at the grouped backends while this process holds its lock
RELAY = web.AppKey("relay", RelayService)  # only where this process runs the Kafka relay (or stands by for it)
HOOK_COMMANDS = web.AppKey("hook_commands", HookCommands)
HOOK_QUERIES = web.AppKey("hook_queries", HookQueries)
HOOK_RUNNER = web.AppKey("hook_runner", HookRunner)  # discovers and calls remote hooks (task chains)
TASKCHAIN_COMMANDS = web.AppKey("taskchain_commands", TaskChainCommands)
TASKCHAIN_QUERIES = web.AppKey("taskchain_queries", TaskChainQueries)  # stored chains (also for the engine, /openai)
TASK_ENGINE = web.AppKey("task_engine", TaskEngine)  # runs task chains (POST /tasks, /openai/{chainID}/…)
TASK_RUN_QUERIES = web.AppKey("task_run_queries", TaskRunQueries)  # recorded chain runs (GET /tasks/runs/{id})
FUNCTION_COMMANDS = web.AppKey("function_commands", FunctionCommands)  # functions and event triggers
FUNCTION_QUERIES = web.AppKey("function_queries", FunctionQueries)  # also the trigger dispatcher's listeners
TRIGGER_SYNC: web.AppKey[Callable[[], None]] = web.AppKey("trigger_sync")  # POST /executor/sync: look at triggers again
TRIGGER_DISPATCHER = web.AppKey("trigger_dispatcher", TriggerDispatcher)  # runs functions while this process holds its lock
TRIGGER_WAITS = web.AppKey("trigger_waits", TriggerWaits)  # POST /events, /ingest, /replay wait for their triggers
IDENTITY_COMMANDS = web.AppKey("identity_commands", IdentityCommands)  # users, access entries, sign-ins
IDENTITY_QUERIES = web.AppKey("identity_queries", IdentityQueries)  # also authorization's stored grants
TOKENS = web.AppKey("tokens", Tokens)  # issues and verifies the JWTs users sign in for
JOB_COMMANDS = web.AppKey("job_commands", JobCommands)  # leases, leasers' reports, the reaper's put-backs
JOB_QUERIES = web.AppKey("job_queries", JobQueries)  # /jobs/pending, /jobs/in-progress, /jobs/parked
LEASE_REAPER = web.AppKey("lease_reaper", LeaseReaper)  # puts expired leases back while this process holds its lock
FILE_COMMANDS = web.AppKey("file_commands", FileCommands)  # files and folders (uploads are streamed to BLOBS first)
FILE_QUERIES = web.AppKey("file_queries", FileQueries)  # the tree with paths (also the search's expand=files)
BLOBS = web.AppKey("blobs", BlobStore)  # uploaded content by sha256 (CHAINLOOM_BLOB_STORE)
INDEX_COMMANDS = web.AppKey("index_commands", IndexCommands)  # POST /index: chunks enriched, embedded, recorded
SEARCH_QUERIES = web.AppKey("search_queries", SearchQueries)  # /search and /keywords, on the vector read model
TELEGRAM_COMMANDS = web.AppKey("telegram_commands", TelegramCommands)  # /telegram-frontends, and the bots' records
TELEGRAM_QUERIES = web.AppKey("telegram_queries", TelegramQueries)  # frontends with their tokens masked
TELEGRAM_POLLER = web.AppKey("telegram_poller", TelegramPoller)  # polls the bots while this process holds its lock
TELEGRAM_WORKER = web.AppKey("telegram_worker", TelegramWorker)  # answers their messages while this process holds its lock
ACTIVITY_QUERIES = web.AppKey("activity_queries", ActivityQueries)  # /activity/*: the log's activity and the records beside
CHAT_COMMANDS = web.AppKey("chat_commands", ChatCommands)  # chat sessions and their turns (also the Telegram bots')
CHAT_QUERIES = web.AppKey("chat_queries", ChatQueries)  # a caller's chats, a chat's history
