"""The event source's domain: external events, mappings (field paths, stringification), signatures."""

import base64
import hashlib
import hmac

import pytest
from freezegun import freeze_time

from chainloom.commands.eventsource import RawIds, kept_headers, parse_payload
from chainloom.domain.errors import Conflict, NotFound, Unauthorized, Unprocessable
from chainloom.domain.eventsource.events import ExternalEvent, RawEvent, utc_day
from chainloom.domain.eventsource.mappings import EventMapping, MappingConfig, apply_mapping, go_string, resolve
from chainloom.domain.eventsource.signatures import check_secret, verify
from chainloom.infra.secrets import SecretBox, SecretsUnavailable, open_secret_box
from chainloom.infra.timefmt import parse_ns

NOW = parse_ns("2025-05-01T10:00:00Z")
MINUTE = 60 * 10**9


def external(**changes) -> ExternalEvent:
    fields = dict(
        id="e-1",
        created_at_ns=NOW,
        event_type="user.created",
        event_source="auth",
        aggregate_type="user",
        aggregate_id="u-1",
        version=1,
    )
    return ExternalEvent(**(fields | changes))


# -- external events -------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"event_type": ""}, "missing required field: event_type is required"),
        ({"aggregate_id": ""}, "missing required field: aggregate_id is required"),
        ({"aggregate_type": ""}, "missing required field: aggregate_type is required"),
        ({"version": 0}, "invalid parameter: version must be greater than 0"),
        ({"version": -3}, "invalid parameter: version must be greater than 0"),
        ({"version": 2**63}, "version must be at most"),
        ({"event_source": "chainloom"}, "reserved"),
        ({"aggregate_id": "a\x00b"}, "NUL"),
        ({"event_type": "bad\ud800"}, "not valid Unicode"),
        ({"created_at_ns": NOW - 10 * MINUTE - 1}, "event is too old"),
        ({"created_at_ns": NOW + 10 * MINUTE + 1}, "event is too new"),
    ],
)
def test_external_events_are_refused_with_the_reference_messages(changes, message):
    with pytest.raises(Unprocessable) as refused:
        external(**changes).validate(NOW)
    assert message in refused.value.message


def test_the_first_failure_wins_and_the_clock_window_is_inclusive():
    with pytest.raises(Unprocessable, match="event_type is required"):
        external(event_type="", aggregate_id="", version=0).validate(NOW)
    external(created_at_ns=NOW - 10 * MINUTE).validate(NOW)
    external(created_at_ns=NOW + 10 * MINUTE).validate(NOW)
    external(event_source="").validate(NOW)  # the source is optional


def test_identity_is_id_type_source_and_utc_day():
    base = external()
    assert base.identity == ("e-1", "user.created", "auth", "20250501")
    assert external(aggregate_id="other", version=7).stream_id == base.stream_id
    assert external(created_at_ns=NOW + 5 * MINUTE).stream_id == base.stream_id  # same day
    assert external(created_at_ns=parse_ns("2025-05-02T00:00:00Z")).stream_id != base.stream_id
    assert external(event_source="other").stream_id != base.stream_id
    assert external(event_type="user.deleted").stream_id != base.stream_id
    assert external(id="x" * 10_000).stream_id.startswith("event:") and len(external(id="x" * 10_000).stream_id) == 70
    assert utc_day(parse_ns("2025-12-31T23:59:59.999999999Z")) == "20251231"


def test_raw_events_need_a_path_and_a_bounded_id():
    with pytest.raises(Unprocessable, match="path is required"):
        RawEvent.receive("r1", "2025-05-01T10:00:00Z", "", {}, {})
    with pytest.raises(Unprocessable, match="id longer than"):
        RawEvent.receive("r" * 300, "2025-05-01T10:00:00Z", "/p", {}, {})
    raw = RawEvent.receive("r1", "2025-05-01T10:00:00Z", "/p", {"A": "b"}, {"k": 1})
    assert raw.key == "r1" and raw.payload == {"k": 1}


# -- field paths and stringification --------------------------------------------------------

PAYLOAD = {
    "type": "user.created",
    "data": {"user_id": "u9", "n": 12, "flag": True, "nothing": None, "nested": {"deep": {"er": "x"}}},
    "items": [{"id": "a", "qty": 1}, {"id": "b", "qty": 2}],
    "empty": [],
}


@pytest.mark.parametrize(
    "path, value",
    [
        ("type", "user.created"),
        ("data.user_id", "u9"),
        ("data.nested.deep.er", "x"),
        ("items[0].id", "a"),
        ("items[1].qty", 2),
        ("items[*].id", "a"),  # a multi-match gives its first value
        ('items[?(@.id=="b")].qty', 2),
        ("..er", "x"),
        ("$.data.n", 12),
        ('data["user_id"]', "u9"),
        ("data.flag", True),
    ],
)
def test_field_paths_resolve(path, value):
    assert resolve(path, PAYLOAD) == value


@pytest.mark.parametrize("path", ["data.missing", "data.nothing", "items[5].id", "empty[*]", "1abc", "data..[", ""])
def test_missing_null_empty_and_unparsable_paths_are_not_found(path):
    from chainloom.domain.eventsource.mappings import _NOT_FOUND

    assert resolve(path, PAYLOAD) is _NOT_FOUND


@pytest.mark.parametrize(
    "value, text",
    [
        ("s", "s"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (123456, "123456"),
        (1000000, "1e+06"),
        (1234567, "1.234567e+06"),
        (0.00001, "1e-05"),
        (0.0001, "0.0001"),
        (1.5, "1.5"),
        (-2.25, "-2.25"),
        (0, "0"),
        (12345678901234567890, "1.2345678901234567e+19"),
        ({"b": 1, "a": "x"}, "map[a:x b:1]"),
        ([1, "two", [3]], "[1 two [3]]"),
    ],
)
def test_values_are_stringified_as_the_reference_does(value, text):
    assert go_string(value) == text


# -- applying a mapping -------------------------------------------------------------------


def mapping(**changes) -> MappingConfig:
    fields = dict(
        path="/hooks/a", event_type="hook.received", event_source="hooks", aggregate_type="thing", version=1,
        aggregate_id_field="data.user_id",
    )
    return MappingConfig(**(fields | changes))


def apply(config, payload=PAYLOAD, headers=None):
    return apply_mapping(config, payload, headers or {}, NOW, lambda: "evt_1")


def test_a_mapping_makes_an_event_of_the_payload():
    event = apply(mapping(metadata_mapping={"n": "data.n", "flag": "data.flag", "items": "items", "none": "nope"}))
    assert (event.id, event.event_type, event.event_source) == ("evt_1", "hook.received", "hooks")
    assert (event.aggregate_type, event.aggregate_id, event.version) == ("thing", "u9", 1)
    assert event.data is PAYLOAD and event.created_at_ns == NOW
    # metadata keeps JSON types; entries that do not resolve are skipped
    assert event.metadata == {"n": 12, "flag": True, "items": PAYLOAD["items"]}


def test_field_overrides_fall_back_or_must_resolve():
    event = apply(mapping(event_type_field="type", event_source_field="nope", aggregate_type_field="items[1].id"))
    assert (event.event_type, event.event_source, event.aggregate_type) == ("user.created", "hooks", "b")
    event = apply(mapping(aggregate_id_field="data.n", event_id_field="items[0].id", version_field="items[1].qty"))
    assert (event.aggregate_id, event.id, event.version) == ("12", "a", 2)
    assert apply(mapping(version_field="v"), {"data": {"user_id": "u"}, "v": "3"}).version == 3


@pytest.mark.parametrize(
    "changes, payload, fragment",
    [
        ({"aggregate_id_field": ""}, PAYLOAD, "aggregate ID field mapping is required"),
        ({"aggregate_id_field": "data.missing"}, PAYLOAD, "aggregate ID field 'data.missing' not found in payload"),
        ({"aggregate_type_field": "nope"}, PAYLOAD, "aggregate type field 'nope' not found in payload"),
        ({"event_id_field": "data.nothing"}, PAYLOAD, "event ID field 'data.nothing' not found in payload"),
        ({"version_field": "v"}, PAYLOAD, "version field 'v' not found in payload"),
        ({"version_field": "data.user_id"}, PAYLOAD, "version field 'data.user_id' is not a positive integer: u9"),
        ({"version_field": "v"}, {"data": {"user_id": "u"}, "v": 1.5}, "not a positive integer: 1.5"),
        ({"version_field": "v"}, {"data": {"user_id": "u"}, "v": -1}, "not a positive integer: -1"),
        ({"version_field": "v"}, {"data": {"user_id": "u"}, "v": True}, "not a positive integer: true"),
    ],
)
def test_fields_the_mapping_needs_are_named_when_missing(changes, payload, fragment):
    with pytest.raises(Unprocessable) as refused:
        apply(mapping(**changes), payload)
    assert fragment in refused.value.message


def test_header_lookups_are_case_insensitive_and_the_payload_wins():
    headers = {"X-Trace-ID": "t-1", "X-GitHub-Event": "push"}
    config = mapping(
        event_type_field="headers.x-github-event",
        metadata_mapping={"trace": 'headers["x-trace-id"]', "also": "headers.X-Trace-ID", "all": "headers"},
    )
    event = apply(config, headers=headers)
    assert event.event_type == "push"
    assert event.metadata["trace"] == event.metadata["also"] == "t-1"
    assert event.metadata["all"] == {"x-trace-id": "t-1", "x-github-event": "push"}
    own = PAYLOAD | {"headers": {"x-github-event": "from-payload"}}
    assert apply(config, own, headers).event_type == "from-payload"


def test_mapping_configuration_is_validated():
    for changes, message in [
        ({"path": ""}, "invalid mapping configuration: path is required"),
        ({"event_type": ""}, "invalid mapping configuration: event_type is required"),
        ({"event_source": ""}, "invalid mapping configuration: event_source is required"),
        ({"aggregate_type": ""}, "invalid mapping configuration: aggregate_type is required"),
        ({"version": 0}, "invalid mapping configuration: version must be > 0, got 0"),
        ({"path": "p" * 2000}, "longer than 1024 bytes"),
        ({"event_source": "chainloom"}, "reserved"),
        ({"aggregate_id_field": "a..["}, "aggregateIDField 'a..[' is not a valid field path"),
        ({"metadata_mapping": {"k": "(("}}, "metadataMapping.k"),
        ({"signature_scheme": "md5"}, "signatureScheme must be one of"),
        ({"signature_scheme": "hmac-sha256"}, "signatureSecret is required"),
    ]:
        with pytest.raises(Unprocessable) as refused:
            mapping(**changes).validate()
        assert message in refused.value.message, changes
    mapping(signature_scheme="hmac-sha256", sealed_secret="v1:x").validate()


def test_mappings_are_aggregates_with_a_lifecycle():
    created = EventMapping.create(mapping())
    assert created.key == "/hooks/a" and created.config == mapping()
    created.update(mapping(version=2))
    assert created.config.version == 2
    with pytest.raises(Conflict):
        created.recreate(mapping())
    created.delete()
    with pytest.raises(NotFound):
        created.update(mapping())
    with pytest.raises(NotFound):
        created.delete()
    created.recreate(mapping(event_type="again"))
    assert created.config.event_type == "again"
    assert [type(e).__name__ for e in created.collect_events()] == ["Created", "Updated", "Deleted", "Recreated"]


# -- signatures -----------------------------------------------------------------------------

BODY = b'{"action":"opened"}'


def github_signature(secret: str, body: bytes = BODY) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def standard_headers(secret_key: bytes, body: bytes = BODY, ts: int = 1_700_000_000, msg_id: str = "msg_1") -> dict:
    mac = hmac.new(secret_key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": f"v1,bad v1,{base64.b64encode(mac).decode()}"}


def test_hex_hmac_signatures_in_the_github_style():
    verify("hmac-sha256", "s3cret", "X-Hub-Signature-256", BODY, {"X-Hub-Signature-256": github_signature("s3cret")}, 0)
    bare = github_signature("s3cret").removeprefix("sha256=").upper()
    verify("hmac-sha256", "s3cret", "X-Sig", BODY, {"X-Sig": bare}, 0)
    for headers, reason in [
        ({}, "missing webhook signature"),
        ({"X-Hub-Signature-256": github_signature("other")}, "invalid webhook signature"),
        ({"X-Hub-Signature-256": github_signature("s3cret", b"tampered")}, "invalid webhook signature"),
    ]:
        with pytest.raises(Unauthorized, match=reason):
            verify("hmac-sha256", "s3cret", "X-Hub-Signature-256", BODY, headers, 0)


def test_standard_webhooks_signatures():
    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    verify("standard-webhooks", secret, "", BODY, standard_headers(key), 1_700_000_000 + 299)
    verify("standard-webhooks", "plain-secret", "", BODY, standard_headers(b"plain-secret"), 1_700_000_000)
    with pytest.raises(Unauthorized, match="tolerance"):
        verify("standard-webhooks", secret, "", BODY, standard_headers(key), 1_700_000_000 + 301)
    with pytest.raises(Unauthorized, match="invalid webhook signature"):
        verify("standard-webhooks", secret, "", b"tampered", standard_headers(key), 1_700_000_000)
    with pytest.raises(Unauthorized, match="missing"):
        verify("standard-webhooks", secret, "", BODY, {"webhook-id": "m"}, 1_700_000_000)
    with pytest.raises(Unauthorized, match="integer"):
        verify("standard-webhooks", secret, "", BODY, standard_headers(key) | {"webhook-timestamp": "soon"}, 0)
    with pytest.raises(Unprocessable, match="base64"):
        check_secret("standard-webhooks", "whsec_%%%")
    with pytest.raises(Unprocessable, match="empty"):
        check_secret("hmac-sha256", "")


def test_secrets_are_sealed_and_only_the_key_opens_them(tmp_path):
    box = open_secret_box("", tmp_path / "secrets.key")
    sealed = box.seal("s3cret")
    assert "s3cret" not in sealed and sealed != box.seal("s3cret")  # fresh nonce each time
    assert open_secret_box("", tmp_path / "secrets.key").open(sealed) == "s3cret"  # the key file is reused
    assert (tmp_path / "secrets.key").stat().st_mode & 0o777 == 0o600
    other = SecretBox(b"k" * 32)
    with pytest.raises(SecretsUnavailable):
        other.open(sealed)
    configured = open_secret_box(base64.b64encode(b"k" * 32).decode(), None)
    assert configured.open(other.seal("x")) == "x"
    assert open_secret_box("", None) is None
    with pytest.raises(SecretsUnavailable):
        open_secret_box("not base64!", None)


# -- ingest helpers -------------------------------------------------------------------------


def test_raw_ids_are_unix_nanoseconds_and_never_repeat():
    with freeze_time("2025-05-01T10:00:00Z"):
        ids = RawIds()
        import time

        now = time.time_ns()
        assert [ids(now), ids(now), ids(now - 5)] == [f"evt_{now}", f"evt_{now + 1}", f"evt_{now + 2}"]


def test_webhook_bodies_must_be_one_json_object():
    assert parse_payload(b'{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
    deep = b'{"a":' * 101 + b"1" + b"}" * 101
    for body in (b"", b"[1]", b'"s"', b"null", b"{bad", b'{"a": NaN}', b'{"a": -Infinity}', b"\xff\xfe", deep):
        with pytest.raises(Unprocessable, match="invalid JSON payload"):
            parse_payload(body)


def test_json_values_the_log_takes():
    from chainloom.domain.storable import check_storable as check_json

    nested: list = []
    for _ in range(98):
        nested = [nested]
    check_json({"k": nested}, "data")  # 100 levels: the object and 99 lists
    with pytest.raises(Unprocessable, match="nested deeper than 100"):
        check_json({"k": [nested]}, "data")
    with pytest.raises(Unprocessable, match="NaN"):
        check_json({"k": [1.0, float("inf")]}, "data")


def test_credentials_are_not_kept_with_raw_events():
    from multidict import CIMultiDict

    headers = CIMultiDict([
        ("X-API-Key", "k"), ("Authorization", "Bearer t"), ("Cookie", "c"), ("X-Gitlab-Token", "s3cret"),
        ("X-Webhook-Secret", "s"), ("X-A", "1"), ("X-A", "2"), ("X-Hub-Signature-256", "sha256=ab"),
    ])
    assert kept_headers(headers) == {"X-A": "1, 2", "X-Hub-Signature-256": "sha256=ab"}


def test_the_relay_publishes_raw_payloads_as_they_came_but_still_guards_chainloom_secrets():
    from chainloom.infra.kafka_log import SecretInClear, check_no_clear_secrets

    raw = {"event_source": "chainloom", "event_type": "raw_event.received",
           "data": {"path": "/slack", "headers": {"X-Slack-Token": "t"}, "payload": {"token": "verification", "a": [{"secret": "x"}]}}}
    check_no_clear_secrets(raw)  # a webhook's own fields named token/secret are its data
    with pytest.raises(SecretInClear):
        check_no_clear_secrets(raw | {"data": raw["data"] | {"token": "clear"}})
    mapping_event = {"event_source": "chainloom", "event_type": "mapping.created",
                     "data": {"config": {"sealed_secret": "v1:" + base64.b64encode(b"x" * 40).decode()}}}
    check_no_clear_secrets(mapping_event)
    with pytest.raises(SecretInClear):
        check_no_clear_secrets({**mapping_event, "data": {"config": {"sealed_secret": "hunter2"}}})


def test_the_mapping_cache_keeps_reads_for_a_while_and_forgets_them_on_change():
    from chainloom.commands.eventsource import MappingCache

    stored = {"/p": mapping()}
    loads = []

    def load(path):
        loads.append(path)
        return stored.get(path)

    cache = MappingCache(load, ttl=0.2)
    assert cache.get("/p") == mapping() and cache.get("/p") == mapping() and loads == ["/p"]
    assert cache.get("/unknown") is None and cache.get("/unknown") is None and loads == ["/p", "/unknown"]
    stored["/p"] = mapping(version=2)  # changed elsewhere: seen once the entry is older than ttl
    assert cache.get("/p").version == 1
    import time

    time.sleep(0.25)
    assert cache.get("/p").version == 2
    stored["/p"] = mapping(version=3)
    cache.clear()  # changed here (or POST /sync): seen at once
    assert cache.get("/p").version == 3


def test_a_read_that_raced_with_a_change_is_not_kept():
    from chainloom.commands.eventsource import MappingCache

    versions = iter([1, 2])

    def load(path):
        version = next(versions)
        if version == 1:
            cache.clear()  # a change lands while the first read is under way
        return mapping(version=version)

    cache = MappingCache(load, ttl=60)
    assert cache.get("/p").version == 1  # the caller gets what it read...
    assert cache.get("/p").version == 2  # ...but it was not kept
