"""The ``chainloom`` command: ``serve``, ``relay``, ``project``, ``projections rebuild|list|status|retry|skip``.

This is an entry point, like ``web``: it imports the outer layers lazily.
"""

from __future__ import annotations

import argparse
import logging
import sys

from chainloom.infra.settings import Settings


def _configure_logging(level: str) -> None:
    from chainloom.web.middleware import RequestIdLogFilter

    handler = logging.StreamHandler()
    handler.addFilter(RequestIdLogFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
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
    _configure_logging(settings.log_level)
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
    _configure_logging(settings.log_level)
    asyncio.run(run_relay(settings))
    return 0


def _project(args: argparse.Namespace, settings: Settings) -> int:
    from chainloom.projections.kafka_worker import run_worker

    if not settings.kafka_enabled:
        print("chainloom: a projector worker needs CHAINLOOM_KAFKA_BOOTSTRAP", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    run_worker(settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chainloom", description="Event-sourced LLM runtime.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API (SQLite in CHAINLOOM_DATA_DIR by default)")
    serve.add_argument("--host", help="listen address (default: CHAINLOOM_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default: CHAINLOOM_PORT, 8081)")
    serve.add_argument("--workers", type=int, help="API worker processes (default: CHAINLOOM_WORKERS, one per core)")
    serve.set_defaults(run=_serve)

    relay = commands.add_parser("relay", help="relay the log to Kafka (CHAINLOOM_KAFKA_BOOTSTRAP) until stopped")
    relay.set_defaults(run=_relay)

    project = commands.add_parser("project", help="keep the read models from Kafka, as a consumer-group worker")
    project.set_defaults(run=_project)

    projections = commands.add_parser("projections", help="manage read models")
    projection_commands = projections.add_subparsers(dest="projection_command", required=True)
    rebuild = projection_commands.add_parser(
        "rebuild",
        help="rebuild read models from position 0 into fresh tables, swapped in only when complete;"
        " safe while servers run (they wait for the swap); on failure the live read models stay as they were",
    )
    rebuild.add_argument("names", nargs="*", metavar="NAME", help="projections to rebuild (default: all)")
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

    args = parser.parse_args(argv)
    return args.run(args, Settings())


if __name__ == "__main__":
    sys.exit(main())
