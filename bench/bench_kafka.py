"""Kafka relay: append → Kafka consumer, events/s and end-to-end lag, on SQLite and PostgreSQL.

    .venv/bin/python bench/bench_kafka.py                   # SQLite; starts its own broker
    bench/run bench/bench_kafka.py                          # SQLite and a durable throwaway PostgreSQL
    bench/bench_kafka.py --bootstrap 127.0.0.1:9092         # against a running broker

For each store: the relay runs as its own process (``chainloom relay``, which
looks at the log every ``CHAINLOOM_KAFKA_RELAY_POLL`` seconds and, on
PostgreSQL, is woken by the log's NOTIFY, as when the API and the relay are
separate); this process appends events (one backend created
per transaction, from one thread unless --writers) at a fixed rate, and a consumer in a third process reads the
topic. Lag = time the consumer got the event − time its append committed
(one clock: one machine). Then a burst: events appended as fast as the store
takes them (ten per transaction), and the time until the consumer has them all.
Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg  # noqa: E402

from chainloom.domain.backends import Backend  # noqa: E402
from chainloom.infra.eventlog import EventLog  # noqa: E402
from chainloom.infra.kafka_broker import LocalBroker  # noqa: E402
from chainloom.infra.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def consume(bootstrap: str, topic: str, expected: int, ready, results, timeout: float) -> None:
    """In a process of its own: receive time of each event's key, until ``expected`` new ones arrived."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50)
    partition = TopicPartition(topic, 0)
    while 0 not in (consumer.partitions_for_topic(topic) or ()):
        time.sleep(0.05)
    consumer.assign([partition])
    consumer.seek_to_end(partition)
    consumer.position(partition)
    ready.set()
    seen: dict[bytes, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=100).values():
            now = time.time()
            for record in batch:
                seen.setdefault(record.key, now)
    consumer.close()
    results.put(seen)


def append_paced(log: EventLog, rate: float, seconds: float, writers: int = 1) -> dict[bytes, float]:
    """Append ``rate`` events a second for ``seconds``, from ``writers`` threads taking turns."""
    committed: dict[bytes, float] = {}
    total = int(rate * seconds)
    start = time.monotonic()

    def write(first: int) -> None:
        for i in range(first, total, writers):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            key = str(uuid.uuid4())
            log.save(Backend.create(key, f"b-{key}", f"http://{key}", "ollama"))
            committed[f"backend:{key}".encode()] = time.time()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return committed


def append_burst(log: EventLog, total: int) -> tuple[dict[bytes, float], float]:
    committed: dict[bytes, float] = {}
    start = time.monotonic()
    for _ in range(total // 10):
        backends = [Backend.create(k, f"b-{k}", f"http://{k}", "ollama") for k in (str(uuid.uuid4()) for _ in range(10))]
        log.save(*backends)
        now = time.time()
        for backend in backends:
            committed[f"backend:{backend.key}".encode()] = now
    return committed, time.monotonic() - start


def run_consumer(bootstrap: str, topic: str, expected: int, timeout: float):
    context = multiprocessing.get_context("spawn")
    ready, results = context.Event(), context.Queue()
    process = context.Process(target=consume, args=(bootstrap, topic, expected, ready, results, timeout))
    process.start()
    if not ready.wait(60):
        raise SystemExit("the consumer did not get ready")
    return process, results


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def bench_store(name: str, settings: Settings, rate: float, seconds: float, burst: int, writers: int) -> None:
    topic = settings.kafka_events_topic
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINLOOM_")}
    env.update({
        "CHAINLOOM_DATA_DIR": str(settings.data_dir), "CHAINLOOM_DATABASE_URL": settings.database_url,
        "CHAINLOOM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "CHAINLOOM_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "CHAINLOOM_LOG_LEVEL": "WARNING", "CHAINLOOM_KAFKA_RELAY_POLL": str(settings.kafka_relay_poll),
    })
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log = EventLog(settings.event_store_env())
    relay = subprocess.Popen([sys.executable, "-m", "chainloom.infra.cli", "relay"], env=env, cwd=ROOT)
    try:
        # Warm up: the relay creates the topic and publishes a first event.
        consumer, results = run_consumer(settings.kafka_bootstrap, topic, 50, 120)
        append_paced(log, 100, 0.5)
        results.get(timeout=60)
        consumer.join()

        consumer, results = run_consumer(settings.kafka_bootstrap, topic, int(rate * seconds), seconds + 60)
        started = time.monotonic()
        committed = append_paced(log, rate, seconds, writers)
        appended_in = time.monotonic() - started
        received = results.get(timeout=seconds + 90)
        consumer.join()
        lags = [(received[k] - t) * 1000 for k, t in committed.items() if k in received]
        missing = len(committed) - len(lags)
        print(f"{name}: paced {len(committed)} events at {len(committed) / appended_in:,.0f}/s appended ({writers} writers)"
              f" → lag p50 {percentile(lags, 50):.1f} ms, p99 {percentile(lags, 99):.1f} ms,"
              f" max {max(lags):.1f} ms, mean {statistics.fmean(lags):.1f} ms"
              + (f"; {missing} not received" if missing else ""))

        consumer, results = run_consumer(settings.kafka_bootstrap, topic, burst, 180)
        first = time.time()
        committed, append_seconds = append_burst(log, burst)
        received = results.get(timeout=240)
        consumer.join()
        last = max(received.values()) if received else float("nan")
        lags = [(received[k] - t) * 1000 for k, t in committed.items() if k in received]
        print(f"{name}: burst of {len(committed)} events appended at {len(committed) / append_seconds:,.0f}/s;"
              f" all on Kafka after {last - first:.2f} s → {len(received) / (last - first):,.0f} events/s end to end;"
              f" lag p50 {percentile(lags, 50):.0f} ms, p99 {percentile(lags, 99):.0f} ms")
    finally:
        relay.terminate()
        relay.wait(30)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", help="PostgreSQL URL (bench/run passes one); SQLite only without it")
    parser.add_argument("--bootstrap", help="a running broker; default: start one (infra/kafka_broker)")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced appends per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the paced run")
    parser.add_argument("--burst", type=int, default=20000, help="events in the burst")
    parser.add_argument("--writers", type=int, default=1, help="threads appending in the paced run")
    parser.add_argument("--relay-poll", type=float, default=Settings().kafka_relay_poll,
                        help="CHAINLOOM_KAFKA_RELAY_POLL of the relay process")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="chainloom-bench-kafka-") as tmp:
        broker = None
        bootstrap = args.bootstrap
        if not bootstrap:
            broker = LocalBroker(Path(tmp) / "broker")
            bootstrap = broker.start()
            print(f"Kafka broker on {bootstrap} (infra/kafka_broker)")
        try:
            stores = [("sqlite", "")] + ([("postgres", args.postgres)] if args.postgres else [])
            for name, url in stores:
                if url:
                    with psycopg.connect(url, autocommit=True) as conn:
                        conn.execute("DROP SCHEMA IF EXISTS public CASCADE")
                        conn.execute("CREATE SCHEMA public")
                settings = Settings(
                    data_dir=Path(tmp) / name, database_url=url, kafka_bootstrap=bootstrap,
                    kafka_topic_prefix=f"bench{uuid.uuid4().hex[:6]}.", kafka_relay_poll=args.relay_poll,
                )
                bench_store(name, settings, args.rate, args.seconds, args.burst, args.writers)
        finally:
            if broker is not None:
                broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
