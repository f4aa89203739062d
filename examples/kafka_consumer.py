#!/usr/bin/env python3
"""A downstream consumer of chainloom's log on Kafka (docs/kafka.md), in plain kafka-python.

Reads ``<prefix>events`` and prints one JSON line per event, each exactly once
and in log order: a record whose ``nid`` is not above the last one printed is
a relay duplicate and is skipped. With ``--group`` the consumer commits its
offsets and resumes where it stopped; without, it reads from the start every
time (a replay).

    python examples/kafka_consumer.py --bootstrap 127.0.0.1:9092 --prefix chainloom. --from-beginning

A real consumer keeps ``last_nid`` with whatever it writes (in the same
transaction), which is what makes its processing exactly once across restarts.
"""

from __future__ import annotations

import argparse
import json
import sys

from kafka import KafkaConsumer, TopicPartition


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", required=True, help="host:port of a broker")
    parser.add_argument("--prefix", default="chainloom.", help="topic prefix (CHAINLOOM_KAFKA_TOPIC_PREFIX)")
    parser.add_argument("--group", help="consumer group (commit offsets, resume); default: none, replay")
    parser.add_argument("--from-beginning", action="store_true", help="replay the whole log")
    parser.add_argument("--max-events", type=int, default=0, help="stop after printing this many events")
    parser.add_argument("--idle-timeout", type=float, default=0, help="stop after this many seconds without events")
    args = parser.parse_args(argv)

    topic = f"{args.prefix}events"
    consumer = KafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        consumer_timeout_ms=int(args.idle_timeout * 1000) if args.idle_timeout else float("inf"),
    )
    if args.group:
        consumer.subscribe([topic])
    else:
        partition = TopicPartition(topic, 0)  # the log topic has exactly one partition
        consumer.assign([partition])
        if args.from_beginning:
            consumer.seek_to_beginning(partition)
        else:
            consumer.seek_to_end(partition)

    last_nid = 0
    printed = 0
    try:
        for record in consumer:
            headers = dict(record.headers)
            nid = int(headers["nid"])
            if nid <= last_nid:
                continue  # a duplicate: the relay published it again after a crash
            event = json.loads(record.value)
            print(json.dumps({
                "nid": nid,
                "id": event["id"],
                "key": record.key.decode(),
                "event_type": headers["event_type"].decode(),
                "aggregate_type": event["aggregate_type"],
                "aggregate_id": event["aggregate_id"],
                "version": event["version"],
                "data": event["data"],
            }, separators=(",", ":")), flush=True)
            last_nid = nid
            printed += 1
            if args.group:
                consumer.commit()
            if args.max_events and printed >= args.max_events:
                break
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
