"""The log on Kafka: topic, record layout and client settings (the downstream contract in code).

``docs/kafka.md`` is the same contract in prose. One topic, ``<prefix>events``,
with ONE partition: Kafka then keeps the log's total order, so a consumer can
track its position by ``nid`` exactly as the in-process projections do, and
drop a duplicate by comparing ``nid`` with the last one it applied. (Several
partitions would only give parallelism by giving up that order; projector
workers get fail-over from a single partition instead: one reads it, the others
stand by.)

A record is one event:

- key: ``<aggregate_type>:<aggregate_id>`` (UTF-8);
- value: the public ``eventstore_Event`` JSON, ``nid`` included (UTF-8);
- headers: ``nid``, ``event_id``, ``event_type``, ``event_source`` and
  ``content-type`` (``application/json``); and the event's seal in the log's hash
  chain (``infra/seals.py``): ``chain_hash`` (its hash) and ``chain_prev`` (the
  hash of the previous sealed position), 64 hex digits each, so a consumer checks
  ``sha256(chain_prev ‖ canonical(value)) == chain_hash`` for each record and
  ``chain_prev`` against the ``chain_hash`` of the record before.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from chainloom.domain.eventsource.events import RAW_EVENT_RECEIVED
from chainloom.infra.envelope import INTERNAL_EVENT_SOURCE

CONTENT_TYPE = b"application/json"
EVENTS_TOPIC = "events"

Envelope = dict[str, Any]
Header = tuple[str, bytes]


def events_topic(prefix: str) -> str:
    return f"{prefix}{EVENTS_TOPIC}"


def record_key(envelope: Envelope) -> bytes:
    return f"{envelope['aggregate_type']}:{envelope['aggregate_id']}".encode()


def record_value(envelope: Envelope) -> bytes:
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()


def record_headers(envelope: Envelope, chain: tuple[str, str] | None = None) -> list[Header]:
    """``chain``: the event's (hash, previous sealed hash) in the log's hash chain (the relay always has them)."""
    headers = [
        ("nid", str(envelope["nid"]).encode()),
        ("event_id", str(envelope["id"]).encode()),
        ("event_type", str(envelope["event_type"]).encode()),
        ("event_source", str(envelope["event_source"]).encode()),
        ("content-type", CONTENT_TYPE),
    ]
    if chain is not None:
        headers += [("chain_hash", chain[0].encode()), ("chain_prev", chain[1].encode())]
    return headers


def decode(value: bytes) -> Envelope:
    """A record's value → the public event (with ``nid``)."""
    return json.loads(value)


def header(headers: Iterable[Header], name: str) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


# -- secrets --------------------------------------------------------------------

# Names of fields that hold credentials; in chainloom's own events they must be sealed
# (``infra/secrets.py``: "v1:<base64>") or empty, never in clear.
_SECRET_NAME = re.compile(r"(secret|password|passwd|api_?key|token|private_?key|credentials?)$", re.IGNORECASE)
_SEALED = re.compile(r"^v\d+:[A-Za-z0-9+/]+={0,2}$")
# Parts of chainloom's own events that hold what came from outside as it came (a webhook's
# payload and headers, kept for /replay): published as accepted, like external events.
_VERBATIM: dict[str, tuple[str, ...]] = {RAW_EVENT_RECEIVED: ("data.payload", "data.headers")}


class SecretInClear(Exception):
    """An event of chainloom's own would carry a secret to Kafka in clear: the relay refuses it."""


def check_no_clear_secrets(envelope: Envelope) -> None:
    """Refuse an internal event whose data has a credential-named field holding a clear string.

    Secrets are sealed where events are made (``infra/secrets.py``); this is the relay's
    last check that none slipped through. External events are clients' own payloads,
    published as they were accepted.
    """
    if envelope.get("event_source") != INTERNAL_EVENT_SOURCE:
        return
    verbatim = _VERBATIM.get(envelope.get("event_type", ""), ())
    for path, value in _strings(envelope.get("data"), "data"):
        if any(path == part or path.startswith(part + ".") for part in verbatim):
            continue
        name = path.rsplit(".", 1)[-1]
        if value and _SECRET_NAME.search(name) and not _SEALED.match(value):
            raise SecretInClear(
                f"event {envelope.get('id')} ({envelope.get('event_type')}, nid {envelope.get('nid')}) "
                f"carries {path} in clear; seal it (infra/secrets.py) before it is appended"
            )


def _strings(value: Any, path: str) -> Iterable[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, path)


# -- the topic -------------------------------------------------------------------


class TopicConfigError(RuntimeError):
    """The topic cannot carry the log (it has more than one partition)."""


def ensure_topic(bootstrap: str, topic: str, replication_factor: int = 1, client_id: str = "chainloom") -> None:
    """Create the log topic (one partition, kept forever) unless it exists; refuse one with several partitions."""
    from kafka import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), client_id=client_id)
    try:
        try:
            admin.create_topics(
                {topic: {
                    "num_partitions": 1,
                    "replication_factor": replication_factor,
                    "configs": {
                        "retention.ms": "-1",
                        "retention.bytes": "-1",
                        "cleanup.policy": "delete",
                        "max.message.bytes": str(MAX_RECORD_BATCH_BYTES),
                    },
                }},
                wait_for_metadata=True,
            )
        except TopicAlreadyExistsError:
            pass
        (described,) = admin.describe_topics([topic])
        partitions = len(described.get("partitions") or ())
        if partitions != 1:
            raise TopicConfigError(
                f"topic {topic} has {partitions} partitions; the log needs exactly one to keep its order"
            )
    finally:
        admin.close()


# -- clients --------------------------------------------------------------------

# A relay chunk is published as one producer batch (one atomic record batch on the broker).
PRODUCER_BATCH_BYTES = 512 * 1024
# The largest record batch the topic takes: an event alone in its batch may be this big
# (ingested webhook payloads are kept in events).
MAX_RECORD_BATCH_BYTES = 16 * 1024 * 1024


def producer_config(bootstrap: str, client_id: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap.split(","),
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        # The relay flushes each chunk itself; lingering keeps a chunk in one batch until then.
        "linger_ms": 1000,
        "batch_size": PRODUCER_BATCH_BYTES,
        "max_request_size": MAX_RECORD_BATCH_BYTES,
        "max_in_flight_requests_per_connection": 1,
        "request_timeout_ms": 10_000,
        "delivery_timeout_ms": 30_000,
        "retry_backoff_ms": 100,
        "reconnect_backoff_ms": 100,
        "reconnect_backoff_max_ms": 1000,
    }


def consumer_config(
    bootstrap: str, group_id: str | None, client_id: str, bootstrap_timeout: float = 30.0
) -> dict[str, Any]:
    """A consumer that is assigned its partition by hand (``assign``): ``group_id`` only names where its
    offsets are committed; it never joins the group, so no session timeout decides who reads.
    ``bootstrap_timeout``: seconds to reach a broker at all before giving up."""
    return {
        "bootstrap_timeout_ms": int(bootstrap_timeout * 1000),
        "bootstrap_servers": bootstrap.split(","),
        "client_id": client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "allow_auto_create_topics": False,
        # The broker answers a fetch as soon as a record arrives; this only bounds an empty one.
        "fetch_max_wait_ms": 100,
        "reconnect_backoff_ms": 100,
        "reconnect_backoff_max_ms": 1000,
    }
