"""The service: builds the application from settings (the composition root of the web process)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, ExitStack
from typing import Any

from aiohttp import web

from chainloom.commands.base import CommandRunner
from chainloom.commands.catalog import CatalogCommands, DefaultModel
from chainloom.commands.chats import ChatCommands
from chainloom.commands.downloads import DownloadCommands
from chainloom.commands.eventsource import EventSourceCommands
from chainloom.commands.execution import Defaults, ExecutionService
from chainloom.commands.files import FileCommands
from chainloom.commands.functions import FunctionCommands
from chainloom.commands.chat_chains import ChatChainSeeder
from chainloom.commands.hooks import HookCommands, HookRunner
from chainloom.commands.local_hooks import ChatCommandsHook, Knowledge, KnowledgeSearch, LocalHooks
from chainloom.commands.identity import IdentityCommands, WorkerAccount
from chainloom.commands.indexing import IndexCommands
from chainloom.commands.jobs import JobCommands
from chainloom.commands.operator import ProjectionCommands
from chainloom.commands.providers import ProviderCommands
from chainloom.commands.runtime import RuntimeCommands
from chainloom.commands.taskchains import TaskChainCommands
from chainloom.commands.telegram import TelegramCommands
from chainloom.commands.tasks import TaskEngine, TaskRunRecorder
from chainloom.domain.chats import Chat
from chainloom.domain.downloads import Download
from chainloom.domain.groups import CHAT_GROUP_ID, EMBED_GROUP_ID, TASKS_GROUP_ID
from chainloom.domain.jobs import Job
from chainloom.infra import seals
from chainloom.infra.blobs import BlobStore, open_blobs
from chainloom.infra.blocking import BlockingPool
from chainloom.infra.bootstrap import open_resources
from chainloom.infra.credentials import Credentials
from chainloom.infra.dispatch_log import DispatchLog
from chainloom.infra.eventlog import EventLog
from chainloom.infra.hooks import HookHttp
from chainloom.infra.kafka_relay import RelayService, open_relay
from chainloom.infra.logwriter import LogWriter
from chainloom.infra.passwords import Passwords
from chainloom.infra.providers import open_clients
from chainloom.infra.readstore import ReadStore
from chainloom.infra.sandbox import Limits, SandboxPool
from chainloom.infra.secrets import SecretBox, SecretsUnavailable
from chainloom.infra.settings import Settings
from chainloom.infra.singleton import Throttled, singleton_lock
from chainloom.infra.telegram import TelegramClient, TokenSealer
from chainloom.infra.vectors import VectorStore
from chainloom.infra.tokens import Tokens, token_secret
from chainloom.projections.dispatch import NAME, ListenedTypes, TriggerDispatcher, TriggerWaits
from chainloom.projections.dispatch_host import HostServices
from chainloom.projections.downloads import DownloadJob, ProgressFeed, ProgressWriter, ensure_progress_table
from chainloom.projections.blob_sweeper import BlobSweeper
from chainloom.projections.lease_reaper import LeaseReaper
from chainloom.projections.live import LiveLog
from chainloom.projections.reconciler import Observer, Reconciler
from chainloom.projections.registry import all_projectors
from chainloom.projections.runner import ProjectionRunner
from chainloom.projections.telegram_bots import Chats, TelegramPoller, TelegramWorker
from chainloom.projections.sealer import open_sealer
from chainloom.projections.tracked import TrackedProjections
from chainloom.projections.waits import ReadModels
from chainloom.queries.activity import ActivityQueries
from chainloom.queries.cache import ReadCache
from chainloom.queries.catalog import CatalogMemberships, CatalogQueries
from chainloom.queries.chats import ChatQueries
from chainloom.queries.downloads import DownloadQueries, DownloadQueue
from chainloom.queries.eventsource import EventIndex, EventSourceQueries
from chainloom.queries.files import FileQueries
from chainloom.queries.functions import FunctionQueries
from chainloom.queries.hooks import HookQueries
from chainloom.queries.identity import IdentityQueries
from chainloom.queries.jobs import JobCandidates, JobQueries
from chainloom.queries.log import LogQueries
from chainloom.queries.operator import OperatorQueries
from chainloom.queries.providers import ProviderKeys, ProviderQueries
from chainloom.queries.runtime import RuntimeQueries
from chainloom.queries.search import SearchQueries
from chainloom.queries.task_runs import TaskRunQueries
from chainloom.queries.taskchains import TaskChainQueries
from chainloom.queries.telegram import BotFrontends, TelegramQueries
from chainloom.web import chats as chat_routes
from chainloom.web import catalog, downloads, eventsource, execution, idempotency, providers, runtime, system
from chainloom.web import functions as function_routes
from chainloom.web import hooks as hook_routes
from chainloom.web import taskchains as taskchain_routes
from chainloom.web import chains as chain_routes
from chainloom.web import tasks as task_routes
from chainloom.web import openai_chat
from chainloom.web import identity as identity_routes
from chainloom.web import files as file_routes
from chainloom.web import jobs as job_routes
from chainloom.web import search as search_routes
from chainloom.web import activity as activity_routes
from chainloom.web.activity_record import ActivityRecorder, activity_record_middleware, ensure_records_table
from chainloom.web import telegram as telegram_routes
from chainloom.web import log as log_routes
from chainloom.web import operator as operator_routes
from chainloom.web import authz, log_digest
from chainloom.web import metrics as metric_routes
from chainloom.web import read_only
from chainloom.web import console
from chainloom.web.api_surface import serve_under_api
from chainloom.web.errors import error_middleware
from chainloom.web.keys import (
    ACTIVITY_QUERIES,
    ACTIVITY_RECORDER,
    BLOBS,
    CATALOG_COMMANDS,
    CHAT_COMMANDS,
    CHAT_QUERIES,
    CATALOG_QUERIES,
    DOWNLOAD_COMMANDS,
    DOWNLOAD_JOB,
    DOWNLOAD_PROGRESS,
    DOWNLOAD_QUERIES,
    EVENT_HUB,
    EVENTSOURCE_COMMANDS,
    EVENTSOURCE_QUERIES,
    EXECUTION,
    FILE_COMMANDS,
    FILE_QUERIES,
    FUNCTION_COMMANDS,
    FUNCTION_QUERIES,
    HOOK_COMMANDS,
    HOOK_QUERIES,
    HOOK_RUNNER,
    IDENTITY_COMMANDS,
    IDENTITY_QUERIES,
    INDEX_COMMANDS,
    JOB_COMMANDS,
    JOB_QUERIES,
    LEASE_REAPER,
    LOG_HEAD,
    PROJECTIONS,
    PROVIDER_COMMANDS,
    PROVIDER_KEYS,
    PROVIDER_QUERIES,
    RECONCILER,
    RELAY,
    RUNTIME_QUERIES,
    SEARCH_QUERIES,
    SETTINGS,
    SIBLINGS,
    TASKCHAIN_COMMANDS,
    TASKCHAIN_QUERIES,
    TASK_ENGINE,
    TASK_RUN_QUERIES,
    TELEGRAM_COMMANDS,
    TELEGRAM_POLLER,
    TELEGRAM_QUERIES,
    TELEGRAM_WORKER,
    TOKENS,
    TRIGGER_DISPATCHER,
    TRIGGER_SYNC,
    TRIGGER_WAITS,
)
from chainloom.web.middleware import request_id_middleware, url_values_middleware
from chainloom.web.sse import EventHub
from chainloom.web.system import STARTUP, StartUp
from chainloom.web.workers import Siblings

logger = logging.getLogger(__name__)

# A worker's projection runner looks at the store this often even when no other worker rang its doorbell
# (a fallback: rings wake it at once), and a standby tries to take the projection lock this often (how
# soon it takes over from a dead holder).
WORKER_POLL = 0.1
LOCK_RETRY = 0.5


def create_app(settings: Settings, siblings: Siblings | None = None) -> web.Application:
    """The service; ``siblings`` when it is one of several worker processes (``web/workers.py``)."""
    # Who may ask (security on: tokens and permissions; off: the optional API key) before anything reads the request;
    # then, in a read-only service, whether it writes. Reads and failures of the areas activity tracks are recorded
    # inside the error envelope (which it sees raised).
    settings = read_only.read_only_jobs(settings)  # read-only: no job that writes
    middlewares = [
        request_id_middleware, error_middleware, activity_record_middleware, *authz.access_middlewares(settings),
        *read_only.middlewares(settings),
        url_values_middleware,
    ]  # fmt: skip
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    authz.setup(app)  # a token refreshed on the way goes out as the request's cookie
    idempotency.setup(app)  # Idempotency-Key on POST and PUT (the innermost middleware)
    app[SETTINGS] = settings
    if siblings is not None:
        app[SIBLINGS] = siblings
    metric_routes.setup(app, settings)  # GET /metrics and the request counts (outermost), unless CHAINLOOM_METRICS is off
    app.cleanup_ctx.append(_services)
    app.add_routes(system.routes)
    app.add_routes(catalog.routes)
    app.add_routes(eventsource.routes)
    app.add_routes(providers.routes)
    app.add_routes(execution.routes)
    app.add_routes(runtime.routes)
    app.add_routes(downloads.routes)
    app.add_routes(hook_routes.routes)
    app.add_routes(taskchain_routes.routes)
    app.add_routes(chain_routes.routes)
    app.add_routes(task_routes.routes)
    app.add_routes(function_routes.routes)
    app.add_routes(openai_chat.routes)
    app.add_routes(chat_routes.routes)
    app.add_routes(identity_routes.routes)
    app.add_routes(file_routes.routes)
    app.add_routes(job_routes.routes)
    app.add_routes(search_routes.routes)
    app.add_routes(activity_routes.routes)
    app.add_routes(telegram_routes.routes)
    app.add_routes(log_digest.routes)
    app.add_routes(log_routes.routes)
    app.add_routes(operator_routes.routes)
    app.add_routes(console.routes)
    app[EVENT_HUB] = EventHub(settings.sse_queue_size)
    app.on_shutdown.append(_end_streams)
    app.on_shutdown.append(downloads.end_streams)
    serve_under_api(app)  # last: every route is served under /api too, for the older platform's clients
    return app


async def _end_streams(app: web.Application) -> None:
    """Live streams never end by themselves: end them before the server waits for its handlers."""
    app[EVENT_HUB].close()


def default_models(settings: Settings) -> dict[str, DefaultModel]:
    return {
        EMBED_GROUP_ID: DefaultModel(settings.embed_model, settings.embed_model_context_length),
        TASKS_GROUP_ID: DefaultModel(settings.task_model, settings.task_model_context_length),
        CHAT_GROUP_ID: DefaultModel(settings.chat_model, settings.chat_model_context_length),
    }


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Open the log, the read store and the secrets, follow the log, seed defaults.

    Every resource's cleanup is registered as it is opened, so a start-up that
    fails half-way closes what it had opened; at shutdown all close in reverse
    order, no store call in flight when the stores close.
    """
    settings = app[SETTINGS]
    async with AsyncExitStack() as stack:
        pool = BlockingPool(settings.db_threads)
        stack.push_async_callback(asyncio.to_thread, pool.close)
        opened = ExitStack()
        stack.push_async_callback(asyncio.to_thread, opened.close)
        resources = await pool.run(opened.enter_context, open_resources(settings, secrets=True))
        log, store = resources.log, resources.store
        await idempotency.open_keys(app, log, settings, pool.run)  # before anything writes under a key
        # Every append of this process goes through one writer, which decides in turn (sparing concurrent
        # writers of one aggregate from losing optimistic-concurrency races) and commits in groups.
        instruments = app.get(metric_routes.INSTRUMENTS)
        writer = (
            read_only.ReadOnlyWriter(log)
            if settings.read_only
            else LogWriter(log, on_stored=instruments.appended if instruments is not None else None)
        )
        metric_routes.open_scrape(app, settings, log, store, pool.run)
        stack.push_async_callback(asyncio.to_thread, writer.close)

        siblings = app.get(SIBLINGS)
        runner = _read_models(settings, log, store, pool, siblings)
        hub = app[EVENT_HUB]
        live: LiveLog | None = None
        if isinstance(runner, ProjectionRunner) and siblings is None:
            runner.add_listener(hub.publish)  # live streams get each batch the runner applies
        else:  # the read models are kept elsewhere (or by whichever worker holds the runner):
            live = LiveLog(log, pool.run, hub.publish, hub.subscriber_count)  # follow the log for the streams
        # With Kafka configured (and no separate `chainloom relay`), this process relays the log too.
        relay: RelayService | None = None
        if settings.kafka_enabled and settings.kafka_relay_in_serve:
            relay = open_relay(settings, log)

        # What follows the log besides the read models (trigger dispatch, requests waiting for it): poked after a write.
        log_jobs: list[Any] = []

        def wait_on(*needs: str) -> Callable[[int | None], Awaitable[None]]:
            """Read-your-writes on the read models a command service answers from (only those can fail it)."""

            async def wait_for(position: int | None) -> None:
                if relay is not None:
                    relay.poke()
                if live is not None:
                    live.poke()
                for job in log_jobs:
                    job.poke()
                if siblings is not None:
                    siblings.doorbell.ring()  # whichever worker projects: the log moved
                await idempotency.read_your_writes(runner.wait_for, position, settings.projection_timeout, needs)
                if siblings is not None:
                    siblings.version.bump()  # what this command wrote may be in a result another worker remembers

            return wait_for

        await runner.start()
        stack.push_async_callback(runner.stop)
        if live is not None:
            live.start()
            stack.push_async_callback(live.stop)
        if siblings is not None:
            siblings.doorbell.listen(lambda: _rung(runner, live, log_jobs))
            stack.callback(siblings.doorbell.stop_listening)
        if relay is not None:
            relay.start()
            stack.push_async_callback(relay.stop)
            app[RELAY] = relay
        # The log's hash chain (infra/seals.py): sealed by one process of all (lock "seals"), poked by appends.
        if not settings.read_only:
            await pool.run(seals.ensure, log)
        app[log_digest.DIGEST] = lambda: pool.run(lambda: seals.digest(log).public())
        if settings.sealer:
            sealer = open_sealer(settings, log)
            sealer.start()
            stack.push_async_callback(sealer.stop)
            log_jobs.append(sealer)
            app[log_digest.SEALER] = sealer
        # Live streams begin at the log's head: a client resuming from an earlier position is caught
        # up from the event index (which it waits for), so the events already in the log are not missed.
        hub.publish([], await pool.run(log.head))

        wait_for_catalog = wait_on("catalog")
        wait_for_eventsource = wait_on("eventsource")
        app[PROJECTIONS] = runner
        app[CATALOG_COMMANDS] = CatalogCommands(
            CommandRunner(writer, wait_for_catalog), CatalogMemberships(store), settings.embed_model
        )
        # Remember query results while the read models stand still (only where this process moves them).
        cache = ReadCache(_cache_stamp(runner, siblings))
        app[CATALOG_QUERIES] = CatalogQueries(store, pool.run, cache)
        # Configuring a provider writes its configuration and its backend: answered from both read models.
        app[PROVIDER_COMMANDS] = ProviderCommands(CommandRunner(writer, wait_on("providers", "catalog")), resources.secrets)
        app[PROVIDER_QUERIES] = ProviderQueries(
            store, pool.run, cache, resources.secrets, settings.provider_keys_revealable
        )
        app[PROVIDER_KEYS] = ProviderKeys(store, pool.run, resources.secrets, cache)
        # Prompts, chats and embeddings: routed on the observed state (a read model), served by the clients.
        clients = open_clients(settings)
        stack.push_async_callback(clients.close)
        app[RUNTIME_QUERIES] = RuntimeQueries(store, pool.run, cache)
        app[EXECUTION] = ExecutionService(
            app[RUNTIME_QUERIES],
            app[PROVIDER_KEYS],
            clients,
            Defaults.from_settings(settings),
            retry_after=settings.reconcile_interval,
        )
        app[EVENTSOURCE_COMMANDS] = EventSourceCommands(
            CommandRunner(writer, wait_for_eventsource),
            writer,
            log,
            pool.run,
            wait_for_eventsource,
            EventIndex(store),
            resources.secrets,
            mapping_changes=siblings.mapping_changes if siblings is not None else None,
        )
        app[EVENTSOURCE_QUERIES] = EventSourceQueries(store, pool.run)
        app[TASKCHAIN_COMMANDS] = TaskChainCommands(CommandRunner(writer, wait_on("taskchains")))
        app[TASKCHAIN_QUERIES] = TaskChainQueries(store, pool.run, cache)
        # Remote hooks: configured through commands; discovered and called over their own guarded session.
        app[HOOK_COMMANDS] = HookCommands(CommandRunner(writer, wait_on("hooks")))
        app[HOOK_QUERIES] = HookQueries(store, pool.run, cache)
        # Functions and event triggers: data here; run by the trigger dispatcher, which looks again after each change.
        app[FUNCTION_COMMANDS] = FunctionCommands(CommandRunner(writer, wait_on("functions")), lambda: app[TRIGGER_SYNC]())
        app[FUNCTION_QUERIES] = FunctionQueries(store, pool.run, cache)
        # Identity: users and access entries on the log, their password hashes beside it (written with their
        # events), tokens signed with the JWT secret. Sign-ins are recorded without waiting for a read model.
        credentials = Credentials(log)
        await pool.run(credentials.ensure)  # before anything appends a credential
        passwords = Passwords(settings.password_hash_time_cost, settings.password_hash_memory_kib)

        def identity_commands(runner: CommandRunner, sign_ins: CommandRunner) -> IdentityCommands:
            return IdentityCommands(
                runner, sign_ins, passwords, credentials, log.owner_of, pool.run, settings.admin_email
            )

        app[IDENTITY_COMMANDS] = identity_commands(CommandRunner(writer, wait_on("identity")), CommandRunner(writer, wait_on()))
        app[IDENTITY_QUERIES] = IdentityQueries(store, pool.run, cache)
        # The clock is looked up at each call (freezegun, in tests, replaces time.time).
        app[TOKENS] = Tokens(_token_secret(settings, resources.secrets), settings.jwt_lifetime, clock=lambda: time.time())
        hook_http = HookHttp(settings.hooks_allow_private_links, settings.provider_connect_timeout)
        stack.push_async_callback(hook_http.close)
        # Built-in hooks (the chat chains' commands and knowledge search) come before remote ones of a name;
        # the knowledge search is added with the documents below.
        local_hooks = LocalHooks()
        app[HOOK_RUNNER] = HookRunner(app[HOOK_QUERIES], hook_http, local_hooks)
        app[LOG_HEAD] = lambda: pool.run(log.head)
        app[log_routes.LOG_QUERIES] = LogQueries(log, pool.run, settings.log_scan_limit)  # GET /log, /log/stream
        # Seed the default groups in the background: stored on the log at once (idempotently), then shown
        # once the read models reach them — at once here when this process projects, whenever a projector
        # worker runs in the distributed mode. Meanwhile the process serves, and /ready says what it awaits.

        async def announce(position: int | None) -> None:
            """The seeding's appends are announced like a command's, not waited for (``StartUp`` waits)."""
            for follower in (relay, live, runner, *log_jobs):
                if follower is not None:
                    follower.poke()
            if siblings is not None:
                siblings.doorbell.ring()

        # Task chains: runs are recorded on the log as they go, announced rather than waited for.
        app[TASK_ENGINE] = TaskEngine(
            app[EXECUTION],
            app[HOOK_RUNNER],
            TaskRunRecorder(CommandRunner(writer, announce)),
            step_limit=settings.task_step_limit,
            on_run_end=instruments.chain_ended if instruments is not None else None,
        )
        stack.push_async_callback(app[TASK_ENGINE].drain)  # its runs' records, before the writer closes
        app[TASK_RUN_QUERIES] = TaskRunQueries(store, pool.run)
        # An operator's status and actions (GET /projections, /relay; retry, skip): a skip's audit is announced,
        # and a cleared fault pokes whoever projects (announce(None)).
        app[operator_routes.OPERATOR_QUERIES] = OperatorQueries(settings, store, log, pool.run, lambda: relay)
        app[operator_routes.PROJECTION_COMMANDS] = ProjectionCommands(
            CommandRunner(writer, announce), store, pool.run, lambda: announce(None)
        )
        # Chats: a chat's history is its events; a turn runs a stored chain through the engine, then is recorded.
        app[CHAT_COMMANDS] = ChatCommands(
            CommandRunner(writer, wait_on("chats")),
            app[TASK_ENGINE],
            app[TASKCHAIN_QUERIES],
            lambda chat_id: log.get(Chat, chat_id),
            pool.run,
        )
        app[CHAT_QUERIES] = ChatQueries(store, pool.run, cache)
        seeder = CatalogCommands(CommandRunner(writer, announce), CatalogMemberships(store), settings.embed_model)
        identity_seeder = identity_commands(CommandRunner(writer, announce), CommandRunner(writer, announce))
        chain_seeder = ChatChainSeeder(CommandRunner(writer, announce))

        async def seed() -> None:
            """The default groups, the chat chains, then the configured worker account (each idempotent); read-only: nothing."""
            if settings.read_only:
                return
            await seeder.seed_internal_groups(default_models(settings), settings.tenancy)
            await chain_seeder.seed()
            if settings.worker_account_configured:
                await identity_seeder.seed_worker(
                    WorkerAccount(settings.worker_user_account_id, settings.worker_user_email, settings.worker_user_password)
                )

        startup = StartUp(
            seed,
            lambda: pool.run(log.head),
            runner,
        )
        app[STARTUP] = startup
        await startup.start()
        stack.push_async_callback(startup.stop)
        # Model downloads: queued by the reconciler, pulled by one process (the "downloads" lock), the pulls'
        # progress relayed through the read store to the /queue/inProgress clients of every process.
        await pool.run(ensure_progress_table, store, settings.read_store_env())
        download_queue = DownloadQueue(store)
        download_job: DownloadJob | None = None

        async def queued_downloads(position: int | None) -> None:
            await announce(position)
            if download_job is not None:
                download_job.poke()

        app[DOWNLOAD_COMMANDS] = DownloadCommands(
            CommandRunner(writer, wait_on("downloads")),
            CommandRunner(writer, queued_downloads),
            download_queue,
            pool.run,
            settings.download_retry_after,
        )
        app[DOWNLOAD_QUERIES] = DownloadQueries(store, pool.run)
        app[DOWNLOAD_PROGRESS] = ProgressFeed(store, pool.run, settings.download_progress_interval, settings.sse_queue_size)
        download_job = DownloadJob(
            app[DOWNLOAD_COMMANDS],
            download_queue,
            lambda key: log.last_event(Download, key),
            clients,
            Throttled(singleton_lock(settings, "downloads"), LOCK_RETRY),
            pool.run,
            ProgressWriter(store, pool.run, settings.download_progress_interval),
            poll=settings.download_poll,
            cancel_check=settings.download_cancel_check,
        )
        app[DOWNLOAD_JOB] = download_job
        if not settings.read_only:
            download_job.start()
            stack.push_async_callback(download_job.stop)
        # The reconciler: one process (of the workers, of every API process sharing the store) looks at the
        # grouped backends and records what it sees; its writes are announced, not waited for.
        reconciler = Reconciler(
            app[RUNTIME_QUERIES],
            RuntimeCommands(CommandRunner(writer, announce)),
            Observer(clients, app[PROVIDER_KEYS], app[DOWNLOAD_COMMANDS], prune=settings.prune_undeclared_models),
            pool.run,
            interval=settings.reconcile_interval,
            lock=Throttled(singleton_lock(settings, "reconciler"), LOCK_RETRY),
        )
        app[RECONCILER] = reconciler
        if settings.reconciler:
            reconciler.start()
            stack.push_async_callback(reconciler.stop)
        # -- documents --
        # Files and folders: content in the blob store (by sha256), the tree on the log; a change's vectorize
        # job and the creator's access entry are written with it.
        blobs = BlobStore(await pool.run(open_blobs, settings, log), pool.run)
        app[BLOBS] = blobs
        app[FILE_QUERIES] = FileQueries(store, pool.run, cache)
        app[FILE_COMMANDS] = FileCommands(
            CommandRunner(writer, wait_on("files", "jobs", "identity")), app[FILE_QUERIES], blobs, settings.file_limit
        )
        # Content no live file names any more (freed within the removal grace, or of a refused upload) and
        # abandoned uploads: removed by one process (the "blobs" lock) while CHAINLOOM_BLOB_SWEEPER is on.
        files_settled = wait_on("files")

        async def files_caught_up() -> None:
            await files_settled(await pool.run(log.head))

        app[system.BLOB_SWEEPER] = BlobSweeper(
            blobs,
            app[FILE_QUERIES],
            files_caught_up,
            Throttled(singleton_lock(settings, "blobs"), LOCK_RETRY),
            pool.run,
            interval=settings.blob_sweep_interval,
        )
        if settings.blob_sweeper:
            app[system.BLOB_SWEEPER].start()
            stack.push_async_callback(app[system.BLOB_SWEEPER].stop)
        # Jobs and leases: leased on the log (atomic across processes); leases that ran out are put back by
        # one process (the "leases" lock) while CHAINLOOM_LEASE_REAPER is on.
        app[JOB_COMMANDS] = JobCommands(
            CommandRunner(writer, wait_on("jobs")),
            CommandRunner(writer, announce),
            JobCandidates(store),
            pool.run,
            settings.job_max_failures,
        )
        app[JOB_QUERIES] = JobQueries(store, pool.run, cache)
        app[LEASE_REAPER] = LeaseReaper(
            app[JOB_COMMANDS],
            Throttled(singleton_lock(settings, "leases"), LOCK_RETRY),
            pool.run,
            interval=settings.lease_reap_interval,
        )
        if settings.lease_reaper:
            app[LEASE_REAPER].start()
            stack.push_async_callback(app[LEASE_REAPER].stop)
        await _telegram(app, stack, settings, writer, store, pool, cache, resources.secrets, wait_on)
        # Index and search: chunks, keywords and embeddings on the log; the vectors a read model in lancedb.
        app[INDEX_COMMANDS] = IndexCommands(
            CommandRunner(writer, wait_on("vectors", "jobs")),
            app[EXECUTION],
            lambda: app[EXECUTION].defaults.embed_model,
            lambda job_id: log.get(Job, job_id),
            pool.run,
        )
        app[SEARCH_QUERIES] = SearchQueries(
            store, pool.run, VectorStore(settings.vector_directory, maintain=False), app[EXECUTION], app[FILE_QUERIES], cache
        )
        knowledge = Knowledge(app[SEARCH_QUERIES], app[FILE_QUERIES], blobs, pool.run)
        local_hooks.add(ChatCommandsHook(knowledge))
        local_hooks.add(KnowledgeSearch(knowledge))
        # Activity: what requests did on the log (a read model), and the reads and failures this process records
        # beside it (web/activity_record.py); the activity routes wait for both.
        await pool.run(ensure_records_table, store, settings.read_store_env())
        recorder = ActivityRecorder(store, pool.run, settings.activity_retention)
        app[ACTIVITY_RECORDER] = recorder
        stack.push_async_callback(recorder.close)

        async def activity_settled() -> None:
            await recorder.flush()
            await runner.wait_for(await pool.run(log.head), settings.projection_timeout, needs=("activity", "task_runs"))

        app[ACTIVITY_QUERIES] = ActivityQueries(store, pool.run, activity_settled)
        followers = [relay, live, runner, app.get(log_digest.SEALER)]
        await _trigger_dispatch(app, stack, settings, log, writer, runner, pool, siblings, followers, log_jobs)
        if isinstance(runner, ProjectionRunner):
            # This process (or a sibling worker) projects: the seeds show within moments, before the first answer.
            await startup.settled(settings.projection_timeout)
        yield


async def _trigger_dispatch(
    app: web.Application,
    stack: AsyncExitStack,
    settings: Settings,
    log: EventLog,
    writer: LogWriter,
    read_models: ReadModels,
    pool: BlockingPool,
    siblings: Siblings | None,
    followers: list[Any],
    log_jobs: list[Any],
) -> None:
    """Functions run by event triggers: dispatched by one process (the ``triggers`` lock) in sandbox processes
    it starts when it first runs a script; every process's POST /events, /ingest and /replay wait for them."""
    dispatch_log = DispatchLog(log)
    await pool.run(dispatch_log.ensure, NAME)  # its tables beside the log, before anything dispatches or waits
    listened = ListenedTypes(app[FUNCTION_QUERIES].listened_types, changes=siblings.trigger_changes if siblings else None)
    app[TRIGGER_SYNC] = listened.clear

    def appended() -> None:
        for follower in followers:
            if follower is not None:
                follower.poke()
        if siblings is not None:
            siblings.doorbell.ring()

    sandbox = SandboxPool(
        settings.sandbox_workers,
        Limits(timeout=settings.function_timeout, memory_bytes=settings.function_memory_mb * 2**20),
    )
    stack.push_async_callback(sandbox.close)
    instruments = app.get(metric_routes.INSTRUMENTS)
    dispatcher = TriggerDispatcher(
        log,
        writer,
        dispatch_log,
        app[FUNCTION_QUERIES],
        read_models,
        sandbox,
        HostServices(app[EXECUTION], app[TASKCHAIN_QUERIES], app[TASK_ENGINE]),
        pool.run,
        lock=Throttled(singleton_lock(settings, "triggers"), LOCK_RETRY),
        max_depth=settings.function_max_depth,
        wait_timeout=settings.projection_timeout,
        on_commit=appended,
        on_executed=instruments.trigger_executed if instruments is not None else None,
    )
    app[TRIGGER_DISPATCHER] = dispatcher
    log_jobs.append(dispatcher)
    app[TRIGGER_WAITS] = TriggerWaits(
        dispatcher,
        dispatch_log,
        listened,
        lambda position: idempotency.read_your_writes(
            read_models.wait_for, position, settings.projection_timeout, ("eventsource",)
        ),
        pool.run,
        timeout=settings.trigger_wait,
        max_depth=settings.function_max_depth,
    )
    log_jobs.append(app[TRIGGER_WAITS])
    if settings.triggers:
        await dispatcher.start()
        stack.push_async_callback(dispatcher.stop)


async def _telegram(
    app: web.Application,
    stack: AsyncExitStack,
    settings: Settings,
    writer: LogWriter,
    store: ReadStore,
    pool: BlockingPool,
    cache: ReadCache,
    secrets: SecretBox | None,
    wait_on: Callable[..., Callable[[int | None], Awaitable[None]]],
) -> None:
    """Telegram frontends: configured through commands (tokens sealed); their bots polled by one process (the
    "telegram-poller" lock) and their messages answered by one (the "telegram-worker" lock), through the job
    queue, while CHAINLOOM_TELEGRAM_BOTS is on."""
    sealer = TokenSealer(secrets)
    app[TELEGRAM_COMMANDS] = TelegramCommands(
        CommandRunner(writer, wait_on("telegram")), CommandRunner(writer, wait_on("telegram", "jobs")), sealer
    )
    app[TELEGRAM_QUERIES] = TelegramQueries(store, pool.run, cache)
    if not settings.telegram_bots:
        return
    client = TelegramClient(settings.telegram_api_base)
    stack.push_async_callback(client.close)
    bots = BotFrontends(store, pool.run, sealer)

    def chats() -> Chats:
        return app[CHAT_COMMANDS]  # made beside the task engine

    worker = TelegramWorker(
        app[JOB_COMMANDS],
        app[TELEGRAM_COMMANDS],
        bots,
        app[IDENTITY_COMMANDS],
        chats,
        client,
        Throttled(singleton_lock(settings, "telegram-worker"), LOCK_RETRY),
        pool.run,
        interval=settings.telegram_poll_interval,
    )
    poller = TelegramPoller(
        bots,
        app[TELEGRAM_COMMANDS],
        client,
        Throttled(singleton_lock(settings, "telegram-poller"), LOCK_RETRY),
        pool.run,
        interval=settings.telegram_poll_interval,
        enqueued=worker.poke,
    )
    app[TELEGRAM_WORKER], app[TELEGRAM_POLLER] = worker, poller
    worker.start()
    stack.push_async_callback(worker.stop)
    poller.start()
    stack.push_async_callback(poller.stop)


def _token_secret(settings: Settings, secrets: SecretBox | None) -> bytes:
    """``CHAINLOOM_JWT_SECRET``, else derived from the secrets key. With neither (PostgreSQL without a secrets
    key) security cannot be on; off, tokens are still issued, signed with a key of this process alone."""
    secret = token_secret(settings.jwt_secret, secrets)
    if secret is not None:
        return secret
    if settings.security_enabled:
        raise SecretsUnavailable("security is on but tokens have no secret: set CHAINLOOM_JWT_SECRET or CHAINLOOM_SECRETS_KEY")
    logger.warning("no CHAINLOOM_JWT_SECRET nor secrets key: tokens are signed with a key of this process alone")
    return os.urandom(32)


def _rung(runner: ReadModels, live: LiveLog | None, log_jobs: list[Any]) -> None:
    """Another worker wrote or projected: look now rather than at the next poll."""
    if isinstance(runner, ProjectionRunner):
        runner.poke()
    if live is not None:
        live.poke()
    for job in log_jobs:
        job.poke()


def _read_models(
    settings: Settings, log: EventLog, store: ReadStore, pool: BlockingPool, siblings: Siblings | None
) -> ReadModels:
    """Embedded: this process follows the log — the one that holds the projection lock, when it is one
    of several workers. Kafka: projector workers do; this process watches their positions."""
    if settings.projections == "kafka":
        # On PostgreSQL the relay tracks its position in the read store's table: a wait can tell it is missing.
        relay = f"kafka-relay:{settings.kafka_events_topic}" if settings.uses_postgres else None
        return TrackedProjections(store, all_projectors(), pool.run, relay=relay)
    if siblings is None:
        projectors = all_projectors(VectorStore(settings.vector_directory), settings.activity_retention)
        return ProjectionRunner(log, store, projectors, pool.run)

    def projected() -> None:
        siblings.version.bump()
        siblings.doorbell.ring()  # the others' commands waiting for this batch


    return ProjectionRunner(
        log,
        store,
        all_projectors(VectorStore(settings.vector_directory), settings.activity_retention),
        pool.run,
        idle_poll=WORKER_POLL,
        lock=Throttled(singleton_lock(settings, "projections"), LOCK_RETRY),
        on_batch=projected,
    )


def _cache_stamp(runner: ReadModels, siblings: Siblings | None) -> Callable[[], int] | None:
    """What remembered query results are stamped with: something that moves whenever the read models may
    have (the runner's version, or the version all workers share), or None to remember nothing (the
    read models are kept by workers elsewhere)."""
    if not isinstance(runner, ProjectionRunner):
        return None
    if siblings is not None:
        return siblings.version
    return lambda: runner.version
