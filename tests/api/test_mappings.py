"""Mapping CRUD (/mappings, /mapping, /sync): event-sourced, secrets never answered in clear."""


import pytest

from chainloom.infra.eventlog import EventLog
from tests.api.helpers import assert_error, call

MAPPING = {
    "path": "/hooks/github",
    "eventType": "github.push",
    "eventSource": "github.com",
    "aggregateType": "github.repo",
    "aggregateIDField": "repository.full_name",
    "version": 1,
}
ANSWERED = MAPPING | {
    "aggregateTypeField": "",
    "eventTypeField": "",
    "eventSourceField": "",
    "eventIDField": "",
    "versionField": "",
    "metadataMapping": {},
    "signatureScheme": "",
    "signatureHeader": "",
    "signatureSecretSet": False,
}


@pytest.fixture
def settings(keyed_settings):
    return keyed_settings


async def create(client, **fields) -> dict:
    status, body = await call(client, "POST", "/mappings", MAPPING | fields)
    assert status == 201, body
    return body


async def test_a_mapping_is_created_listed_read_replaced_and_removed(client):
    assert await create(client) == ANSWERED
    status, listed = await call(client, "GET", "/mappings")
    assert listed == [ANSWERED]
    status, one = await call(client, "GET", "/mapping", params={"path": "/hooks/github"})
    assert one == ANSWERED
    replacement = {"path": "/ignored", "eventType": "github.pr", "eventSource": "gh", "aggregateType": "pr", "version": 2,
                   "metadataMapping": {"sender": "sender.login"}}
    status, replaced = await call(client, "PUT", "/mapping", replacement, params={"path": "/hooks/github"})
    assert status == 200
    assert replaced == ANSWERED | replacement | {"path": "/hooks/github", "aggregateIDField": ""}  # a full replacement
    status, one = await call(client, "GET", "/mapping", params={"path": "/hooks/github"})
    assert one == replaced
    status, body = await call(client, "DELETE", "/mapping", params={"path": "/hooks/github"})
    assert (status, body) == (200, "mapping removed")
    status, body = await call(client, "GET", "/mapping", params={"path": "/hooks/github"})
    assert_error(status, body, 404)
    status, listed = await call(client, "GET", "/mappings")
    assert listed == []
    assert await create(client) == ANSWERED  # a removed path can be mapped again


async def test_mappings_are_sorted_by_path_and_any_path_works(client):
    for path in ("/b", "/a/with/slashes", "urn:x:y", "/a"):
        await create(client, path=path)
    status, listed = await call(client, "GET", "/mappings")
    assert [m["path"] for m in listed] == ["/a", "/a/with/slashes", "/b", "urn:x:y"]
    status, one = await call(client, "GET", "/mapping", params={"path": "urn:x:y"})
    assert one["path"] == "urn:x:y"


async def test_mapping_changes_are_events_of_the_log(client, settings):
    await create(client)
    await call(client, "PUT", "/mapping", MAPPING | {"version": 3}, params={"path": "/hooks/github"})
    await call(client, "DELETE", "/mapping", params={"path": "/hooks/github"})
    log = EventLog(settings.event_store_env())
    try:
        changes = [e for e in log.read(0, 10_000) if e["aggregate_type"] == "mapping"]
    finally:
        log.close()
    assert [e["event_type"] for e in changes] == ["mapping.created", "mapping.updated", "mapping.deleted"]
    assert {e["aggregate_id"] for e in changes} == {"/hooks/github"}
    assert [e["version"] for e in changes] == [1, 2, 3]


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"path": ""}, "invalid mapping configuration: path is required"),
        ({"eventType": ""}, "invalid mapping configuration: event_type is required"),
        ({"eventSource": ""}, "invalid mapping configuration: event_source is required"),
        ({"aggregateType": ""}, "invalid mapping configuration: aggregate_type is required"),
        ({"version": 0}, "invalid mapping configuration: version must be > 0, got 0"),
        ({"version": "1"}, "version"),
        ({"metadataMapping": {"k": 1}}, "metadataMapping"),
        ({"aggregateIDField": "a[["}, "not a valid field path"),
        ({"signatureScheme": "rot13", "signatureSecret": "x"}, "signatureScheme must be one of"),
        ({"signatureScheme": "hmac-sha256"}, "signatureSecret is required"),
        ({"signatureScheme": "hmac-sha256", "signatureSecret": ""}, "signatureSecret must not be empty"),
        ({"signatureScheme": "standard-webhooks", "signatureSecret": "whsec_!!"}, "must be followed by base64"),
    ],
)
async def test_invalid_mappings_are_422(client, fields, fragment):
    status, body = await call(client, "POST", "/mappings", MAPPING | fields)
    assert_error(status, body, 422, fragment)
    status, listed = await call(client, "GET", "/mappings")
    assert listed == []


async def test_conflicts_missing_paths_and_unknown_mappings(client):
    await create(client)
    status, body = await call(client, "POST", "/mappings", MAPPING)
    assert_error(status, body, 409, "unique constraint violation")
    for method in ("GET", "DELETE"):
        status, body = await call(client, method, "/mapping")
        assert_error(status, body, 400, "missing path query parameter")
        status, body = await call(client, method, "/mapping", params={"path": "/nope"})
        assert_error(status, body, 404)
    status, body = await call(client, "PUT", "/mapping", b"{broken")
    assert_error(status, body, 400, "missing path query parameter")  # the path is told first
    status, body = await call(client, "PUT", "/mapping", MAPPING, params={"path": "/nope"})
    assert_error(status, body, 404)
    status, body = await call(client, "PUT", "/mapping", MAPPING | {"version": 0}, params={"path": "/hooks/github"})
    assert_error(status, body, 422, "version must be > 0")
    status, body = await call(client, "POST", "/sync")
    assert (status, body) == (200, "mappings synchronized")


async def test_signature_secrets_are_sealed_kept_on_update_and_never_answered(client, settings):
    body = await create(client, signatureScheme="hmac-sha256", signatureSecret="hunter2-secret")
    assert body["signatureSecretSet"] is True and "signatureSecret" not in body
    # a client echoing what it read (without the secret) keeps the secret
    status, echoed = await call(client, "PUT", "/mapping", body | {"version": 2}, params={"path": "/hooks/github"})
    assert echoed["signatureSecretSet"] is True and echoed["version"] == 2
    status, listed = await call(client, "GET", "/mappings")
    assert listed == [echoed]
    # dropping the scheme drops the secret; setting a scheme again needs a secret again
    status, plain = await call(client, "PUT", "/mapping", body | {"signatureScheme": ""}, params={"path": "/hooks/github"})
    assert plain["signatureSecretSet"] is False
    status, refused = await call(client, "PUT", "/mapping", body, params={"path": "/hooks/github"})
    assert_error(status, refused, 422, "signatureSecret is required")
    log = EventLog(settings.event_store_env())
    try:
        stored = b"".join(n.state for n in log.recorder.select_notifications(start=1, limit=10_000))
    finally:
        log.close()
    assert b"hunter2-secret" not in stored and b"sealedSecret" in stored.replace(b"sealed_secret", b"sealedSecret")


async def test_without_a_key_secrets_are_refused_with_postgres(tmp_path, service_for):
    from tests.conftest import POSTGRES_URL, make_settings, reset_postgres

    if not POSTGRES_URL:
        pytest.skip("no PostgreSQL")
    reset_postgres(POSTGRES_URL)
    async with service_for(make_settings("postgres", tmp_path)) as client:
        status, body = await call(client, "POST", "/mappings", MAPPING | {"signatureScheme": "hmac-sha256", "signatureSecret": "s"})
        assert_error(status, body, 422, "CHAINLOOM_SECRETS_KEY")
        await create(client)  # mappings without a secret need no key
