"""The ``chainloom`` command: ``serve``, ``relay``, ``project``, ``worker``, ``projections rebuild|list|status|retry|skip``,
``log tail|export|import``, ``audit who|verify``.

This is an entry point, like ``web``: it imports the outer layers lazily.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from chainloom.infra.settings import Settings


def _configure_logging(level: str, log_format: str = "text") -> None:
    """Text lines, or JSON objects (``CHAINLOOM_LOG_FORMAT=json``: infra/logformat.py)."""
    from chainloom.infra.logformat import formatter
    from chainloom.web.middleware import RequestIdLogFilter

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdLogFilter())
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from chainloom.web.app import create_app

    if args.host:
        settings.host = args.host
    if args.port:
        settings.port = args.port
    if args.workers:
        settings.workers = args.workers
    if args.data_dir:
        settings = settings.in_data_dir(Path(args.data_dir))
    if args.read_only:
        settings.read_only = True
    _configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        from chainloom.web.workers import serve

        return serve(settings, ACCESS_LOG_FORMAT, _announce)
    from chainloom.web.workers import run_until_stopped

    run_until_stopped(create_app(settings), web.TCPSite, ACCESS_LOG_FORMAT, _announce, host=settings.host, port=settings.port)
    return 0


ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs rid=%{X-Request-ID}o'


def _announce(message: str) -> None:
    logging.getLogger("chainloom.infra.cli").info(message.strip())


def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    if args.into:
        return _entry("chainloom.projections.point_in_time:rebuild_into_command")(args, settings)
    if args.until:
        print("chainloom: --until builds the read models as they stood then aside: it needs --into DIR", file=sys.stderr)
        return 2
    from tqdm import tqdm

    from chainloom.projections.rebuild import rebuild

    bar = tqdm(unit="event", desc="rebuilding " + (", ".join(args.names) or "all read models"))

    def progress(position: int, head: int) -> None:
        bar.total = head
        bar.update(position - bar.n)

    try:
        position = rebuild(settings, args.names or None, progress)
    except ValueError as error:
        bar.close()
        print(f"chainloom: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        bar.close()
        print(f"chainloom: rebuild failed, the live read models are unchanged: {error}", file=sys.stderr)
        return 1
    bar.close()
    print(f"rebuilt up to position {position}")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from chainloom.projections.operator import status

    for projection in status(settings):
        state = "ok"
        if projection.fault is not None:
            fault = projection.fault
            state = (
                f"FAULTED at event {fault.position} ({fault.event_type} {fault.event_id}) since {fault.failed_at}:"
                f" {fault.error}"
            )
        print(f"{projection.name}: position {projection.position} of {projection.head}; {state}")
    return 0


def _retry_or_skip(args: argparse.Namespace, settings: Settings) -> int:
    from chainloom.projections import operator

    action = operator.retry if args.projection_command == "retry" else operator.skip
    try:
        fault = action(settings, args.name)
    except (ValueError, operator.NotFaulted) as error:
        print(f"chainloom: {error}", file=sys.stderr)
        return 2
    done = "will try again" if action is operator.retry else "skipped"
    print(f"{args.name}: {done} event {fault.position} ({fault.event_type} {fault.event_id})")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from chainloom.projections.rebuild import projector_names

    print("\n".join(projector_names()))
    return 0


def _relay(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from chainloom.infra.kafka_relay import run_relay

    if not settings.kafka_enabled:
        print("chainloom: the relay needs CHAINLOOM_KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run_relay(settings))
    return 0


def _project(args: argparse.Namespace, settings: Settings) -> int:
    from chainloom.projections.kafka_worker import run_worker

    if not settings.kafka_enabled:
        print("chainloom: a projector worker needs CHAINLOOM_KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level, settings.log_format)
    run_worker(settings)
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from pydantic import ValidationError

    from chainloom.infra.doc_worker import WorkerConfig, run_worker

    options = {
        "api_base_url": args.api_base_url, "email": args.email, "password": args.password, "api_key": args.api_key,
        "leaser_id": args.leaser_id, "lease_duration_seconds": args.lease_duration,
        "request_timeout_seconds": args.request_timeout, "worker_type": args.type, "idle_seconds": args.idle,
        "error_backoff_seconds": args.error_backoff,
    }  # fmt: skip
    try:
        config = WorkerConfig(**{name: value for name, value in options.items() if value is not None})
    except ValidationError as error:
        print(f"chainloom: {error}", file=sys.stderr)
        return 2
    if settings.log_format == "json":
        _configure_logging(settings.log_level, settings.log_format)
    else:
        logging.basicConfig(
            level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s", force=True
        )  # no request ids: a worker serves none
    return run_worker(config, until_idle=args.until_idle)


def _entry(target: str) -> Callable[[argparse.Namespace, Settings], int]:
    """The command ``module:function`` (imported when it runs): ``function(args, settings)`` gives the exit status."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        module, name = target.split(":")
        return int(getattr(importlib.import_module(module), name)(args, settings))

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chainloom", description="Event-sourced LLM runtime.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API (SQLite in CHAINLOOM_DATA_DIR by default)")
    serve.add_argument("--host", help="listen address (default: CHAINLOOM_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default: CHAINLOOM_PORT, 8081)")
    serve.add_argument("--workers", type=int, help="API worker processes (default: CHAINLOOM_WORKERS, one per core)")
    serve.add_argument(
        "--read-only", action="store_true", help="answer reads only: every write is refused, no background job runs"
    )
    serve.add_argument(
        "--data-dir", metavar="DIR", help="serve the embedded store in DIR (its SQLite files, blobs and vectors; e.g."
        " one `projections rebuild --until … --into DIR` built), instead of CHAINLOOM_DATA_DIR / CHAINLOOM_DATABASE_URL"
    )
    serve.set_defaults(run=_serve)

    relay = commands.add_parser("relay", help="relay the log to Kafka (CHAINLOOM_KAFKA_BOOTSTRAP) until stopped")
    relay.set_defaults(run=_relay)

    project = commands.add_parser("project", help="keep the read models from Kafka, as a consumer-group worker")
    project.set_defaults(run=_project)

    worker = commands.add_parser(
        "worker",
        help="chunk uploaded documents for the index through the HTTP API (infra/doc_worker.py); options win over"
        " API_BASE_URL, WORKER_EMAIL, WORKER_PASSWORD, WORKER_LEASER_ID, WORKER_LEASE_DURATION_SECONDS,"
        " WORKER_REQUEST_TIMEOUT_SECONDS, WORKER_TYPE (also CHAINLOOM_-prefixed)",
    )
    worker.add_argument("--api-base-url", help="the API's URL, with or without /api (default http://localhost:8081/api)")
    worker.add_argument("--email", help="the worker account's e-mail (none: no sign-in, security off)")
    worker.add_argument("--password", help="its password (better: WORKER_PASSWORD)")
    worker.add_argument("--api-key", help="send this API key as X-API-Key instead of signing in (WORKER_API_KEY)")
    worker.add_argument("--leaser-id", help="who holds the leases (default chainloom-worker-<host>-<pid>)")
    worker.add_argument("--lease-duration", type=float, metavar="SECONDS", help="lease duration (default 300)")
    worker.add_argument("--request-timeout", type=float, metavar="SECONDS", help="per request (default 300)")
    worker.add_argument("--type", choices=["plaintext", "pdf", "all"], help="which documents (default all)")
    worker.add_argument("--idle", type=float, metavar="SECONDS", help="wait when there is no work (default 1)")
    worker.add_argument("--error-backoff", type=float, metavar="SECONDS", help="wait after an error (default 30)")
    worker.add_argument("--until-idle", action="store_true", help="stop when there is no work left (exit 1 on an error)")
    worker.set_defaults(run=_worker)

    projections = commands.add_parser("projections", help="manage read models")
    projection_commands = projections.add_subparsers(dest="projection_command", required=True)
    rebuild = projection_commands.add_parser(
        "rebuild",
        help="rebuild read models from position 0 into fresh tables, swapped in only when complete;"
        " safe while servers run (they wait for the swap); on failure the live read models stay as they were",
    )
    rebuild.add_argument("names", nargs="*", metavar="NAME", help="projections to rebuild (default: all)")
    rebuild.add_argument(
        "--until", metavar="NID|TIME", help="only the events up to this position or time (RFC 3339); needs --into"
    )
    rebuild.add_argument(
        "--into", metavar="DIR", help="build aside into this data directory (never touching the live read models)"
    )
    rebuild.set_defaults(run=_rebuild)
    listing = projection_commands.add_parser("list", help="list the projections")
    listing.set_defaults(run=_list)
    status = projection_commands.add_parser("status", help="each projection's position, the log head, and its fault")
    status.set_defaults(run=_status)
    retry = projection_commands.add_parser(
        "retry", help="clear a faulted projection's fault: it tries its poison event again (running servers too)"
    )
    retry.add_argument("name", metavar="NAME")
    retry.set_defaults(run=_retry_or_skip)
    skip = projection_commands.add_parser(
        "skip",
        help="skip a faulted projection's poison event: audited on the log as projection.event_skipped,"
        " then the projection goes on after it (running servers too; rebuilds skip it as well)",
    )
    skip.add_argument("name", metavar="NAME")
    skip.set_defaults(run=_retry_or_skip)

    log = commands.add_parser("log", help="read the log by position, export it, import it")
    log_commands = log.add_subparsers(dest="log_command", required=True)
    tail = log_commands.add_parser("tail", help="print the log's last events (one public event per line)")
    tail.add_argument("-f", "--follow", action="store_true", help="go on printing events as they are appended")
    tail.add_argument("-n", "--lines", type=int, default=10, help="how many of the last events (default 10)")
    tail.add_argument("--after", type=int, metavar="NID", help="from this position on instead of the last events")
    tail.add_argument("--type", dest="type_prefix", metavar="PREFIX", help="only event types starting with it")
    tail.add_argument("--source", help="only events of this event_source")
    tail.add_argument("--aggregate", metavar="TYPE[/ID]", help="only events of this aggregate type (and id)")
    tail.add_argument("--actor", help="only events recorded for this actor")
    tail.set_defaults(run=_entry("chainloom.infra.log_reader:tail_command"))
    export = log_commands.add_parser(
        "export", help="write the log as JSON lines to standard output (one public event per line), streaming"
    )
    export.add_argument("--after", type=int, default=0, metavar="NID", help="from after this position (default 0)")
    export.add_argument("--until", type=int, metavar="NID", help="up to this position, included (default: the head)")
    export.add_argument(
        "--type", dest="types", action="append", metavar="PREFIX", help="only event types starting with it (repeatable)"
    )
    export.add_argument(
        "--with-state",
        action="store_true",
        help="also what lives beside the log (password hashes, trigger dispatch, seals, blob content), for a"
        " migration; a public export (for an auditor) leaves it out",
    )
    export.set_defaults(run=_entry("chainloom.infra.log_transfer:export_command"))
    load = log_commands.add_parser(
        "import", help="append an export to an empty log (its positions and ids kept), SQLite or PostgreSQL"
    )
    load.add_argument("file", help="the export (JSON lines; - for standard input)")
    load.set_defaults(run=_entry("chainloom.infra.log_transfer:import_command"))

    audit = commands.add_parser("audit", help="who changed what; the log's hash chain")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    who = audit_commands.add_parser("who", help="who changed an aggregate, when, under which request")
    who.add_argument("aggregate", metavar="TYPE/ID", help="the aggregate, e.g. backend/3f2a…")
    who.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    who.set_defaults(run=_entry("chainloom.infra.audit:who_command"))
    verify = audit_commands.add_parser(
        "verify", help="walk the log's hash chain; exit 1 at the first position where it breaks"
    )
    verify.add_argument(
        "--digest",
        metavar="POSITION:HASH",
        help="a digest recorded earlier (GET /log/digest): fail unless the chain still leads to it",
    )
    verify.set_defaults(run=_entry("chainloom.infra.seals:verify_command"))

    args = parser.parse_args(argv)
    return args.run(args, Settings())


if __name__ == "__main__":
    sys.exit(main())
