"""``python -m chainloom.infra.kafka_broker fetch | start --dir DIR | stop --dir DIR``.

``start`` prints the bootstrap address (``127.0.0.1:PORT``) on stdout and
leaves the broker running; ``stop`` stops it (and with ``--clean`` removes DIR).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from chainloom.infra.kafka_broker import BrokerError, LocalBroker, fetch, kafka_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chainloom.infra.kafka_broker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("fetch", help="fetch the broker's jars with Maven; print the classpath folder")
    commands.add_parser("version", help="print the pinned Kafka version")
    start = commands.add_parser("start", help="start a broker in DIR; print its bootstrap address")
    start.add_argument("--dir", required=True, type=Path)
    start.add_argument("--timeout", type=float, default=90.0)
    stop = commands.add_parser("stop", help="stop the broker of DIR")
    stop.add_argument("--dir", required=True, type=Path)
    stop.add_argument("--clean", action="store_true", help="remove DIR afterwards")
    args = parser.parse_args(argv)

    try:
        if args.command == "fetch":
            print(fetch())
        elif args.command == "version":
            print(kafka_version())
        elif args.command == "start":
            print(LocalBroker(args.dir).start(timeout=args.timeout))
        elif args.command == "stop":
            if args.dir.exists():
                LocalBroker(args.dir).stop()
                if args.clean:
                    shutil.rmtree(args.dir, ignore_errors=True)
    except BrokerError as error:
        print(f"kafka_broker: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
