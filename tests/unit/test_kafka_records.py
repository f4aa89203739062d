"""The Kafka record contract (key, value, headers) and the relay's refusal of secrets in clear."""

from __future__ import annotations

import json

import pytest

from chainloom.infra.kafka_log import (
    SecretInClear,
    check_no_clear_secrets,
    decode,
    events_topic,
    header,
    record_headers,
    record_key,
    record_value,
)
from chainloom.infra.kafka_relay import KafkaRelay

EVENT = {
    "id": "6f1c2b9e-4a43-4bd5-9d7e-0c5b8f0a1e22",
    "nid": 42,
    "created_at": "2026-11-28T19:33:19.76333Z",
    "event_type": "backend.created",
    "event_source": "chainloom",
    "aggregate_type": "backend",
    "aggregate_id": "e802436e-efff-456d-b682-007889f20699",
    "version": 1,
    "data": {"name": "gpu-1", "baseUrl": "http://gpu-1:11434", "type": "ollama"},
    "metadata": {"actor": "anonymous", "request_id": "r1", "correlation_id": "r1"},
}


def test_record_is_the_public_event():
    assert events_topic("chainloom.") == "chainloom.events"
    assert record_key(EVENT) == b"backend:e802436e-efff-456d-b682-007889f20699"
    assert decode(record_value(EVENT)) == EVENT
    assert json.loads(record_value({**EVENT, "data": {"name": "bäckend"}}))["data"]["name"] == "bäckend"
    headers = record_headers(EVENT)
    assert header(headers, "nid") == b"42"
    assert header(headers, "event_id") == EVENT["id"].encode()
    assert header(headers, "event_type") == b"backend.created"
    assert header(headers, "event_source") == b"chainloom"
    assert header(headers, "content-type") == b"application/json"


@pytest.mark.parametrize("data", [
    {"secret": "hunter2"},
    {"mapping": {"signingSecret": "whsec_abc"}},
    {"botToken": "123:abc"},
    {"apiKey": "sk-live"},
    {"users": [{"password": "pw"}]},
])
def test_the_relay_refuses_credentials_in_clear(data):
    with pytest.raises(SecretInClear):
        check_no_clear_secrets({**EVENT, "data": data})


@pytest.mark.parametrize("data", [
    {"sealedSecret": "v1:q83vEjRWeJA=", "signatureScheme": "hmac-sha256-hex"},
    {"secret": ""},
    {"maxTokens": 2048, "tokenizer": "bpe", "contextLength": 4096},
    {"name": "secret-sauce"},
])
def test_sealed_empty_and_innocent_fields_pass(data):
    check_no_clear_secrets({**EVENT, "data": data})


def test_external_events_are_published_as_accepted():
    check_no_clear_secrets({**EVENT, "event_source": "github", "data": {"password": "their payload"}})


def test_chunks_keep_order_and_fit_a_producer_batch():
    events = [{**EVENT, "nid": n, "data": {"blob": "x" * 50_000}} for n in range(1, 40)]
    chunks = list(KafkaRelay._chunks(events))
    assert len(chunks) > 1
    assert [e["nid"] for chunk in chunks for e in chunk] == list(range(1, 40))
    big = [{**EVENT, "nid": 1, "data": {"blob": "x" * 2_000_000}}]
    assert list(KafkaRelay._chunks(big)) == [big]  # an event larger than a chunk goes alone
