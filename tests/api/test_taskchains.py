"""/taskchains CRUD and POST /chains: event-sourced, the chain answered as the reference serialises it."""

from __future__ import annotations

from chainloom.commands.chat_chains import CHAT_CHAIN, OPENAI_CHAT_CHAIN
from chainloom.infra.eventlog import EventLog
from tests.api.helpers import assert_error, call

SEEDED = {CHAT_CHAIN, OPENAI_CHAT_CHAIN}  # every service stores them at start-up (tests/api/test_chat_chains.py)


def chain(chain_id: str = "triage", **fields) -> dict:
    return {
        "id": chain_id,
        "tasks": [
            {
                "id": "classify",
                "handler": "condition_key",
                "valid_conditions": {"urgent": True, "normal": False},
                "prompt_template": "Ticket: {{.input}}",
                "transition": {"branches": [{"operator": "equals", "when": "true", "goto": "reply"},
                                            {"operator": "default", "goto": "end"}]},
            },
            {"id": "reply", "handler": "raw_string", "Unknown": 1},
        ],
        **fields,
    }


# What the API answers for chain(): every always-written key, the unknown key dropped.
def answered(chain_id: str = "triage", description: str = "") -> dict:
    return {
        "id": chain_id,
        "debug": False,
        "description": description,
        "token_limit": 0,
        "tasks": [
            {
                "id": "classify",
                "description": "",
                "handler": "condition_key",
                "valid_conditions": {"urgent": True, "normal": False},
                "prompt_template": "Ticket: {{.input}}",
                "transition": {"on_failure": "", "branches": [{"operator": "equals", "when": "true", "goto": "reply"},
                                                              {"operator": "default", "when": "", "goto": "end"}]},
            },
            {"id": "reply", "description": "", "handler": "raw_string", "prompt_template": "",
             "transition": {"on_failure": "", "branches": None}},
        ],
    }


async def test_a_chain_is_stored_read_upserted_replaced_deleted_and_stored_again_each_an_event(client, settings):
    assert await call(client, "POST", "/taskchains", chain()) == (201, answered())
    assert await call(client, "GET", "/taskchains/triage") == (200, answered())
    # POST is an upsert: the same id again replaces the chain (no 409).
    assert await call(client, "POST", "/taskchains", chain(description="v2")) == (201, answered(description="v2"))
    # PUT keeps the path's id (a body without one is fine).
    body = chain(description="v3")
    del body["id"]
    assert await call(client, "PUT", "/taskchains/triage", body) == (200, answered(description="v3"))
    assert await call(client, "GET", "/taskchains/triage") == (200, answered(description="v3"))
    assert await call(client, "DELETE", "/taskchains/triage") == (200, "task chain triage deleted")
    status, body = await call(client, "GET", "/taskchains/triage")
    assert_error(status, body, 404, "failed to get task chain: libdb: not found")
    for method, path in (("DELETE", "/taskchains/triage"), ("PUT", "/taskchains/triage")):
        status, body = await call(client, method, path, chain() if method == "PUT" else None)
        assert_error(status, body, 404, "libdb: not found")
    # POST /chains is the same upsert: a deleted chain is stored again.
    assert await call(client, "POST", "/chains", chain()) == (201, answered())
    status, listed = await call(client, "GET", "/taskchains")
    assert (status, listed[0]) == (200, answered()) and {c["id"] for c in listed[1:]} == SEEDED

    log = EventLog(settings.event_store_env())
    try:
        changes = [e for e in log.read(0, 10_000) if e["aggregate_type"] == "taskchain" and e["aggregate_id"] not in SEEDED]
    finally:
        log.close()
    assert [e["event_type"] for e in changes] == [
        "taskchain.created",
        "taskchain.updated",
        "taskchain.updated",
        "taskchain.deleted",
        "taskchain.recreated",
    ]
    assert {e["aggregate_id"] for e in changes} == {"triage"}
    assert changes[0]["data"]["definition"] == answered()


async def test_what_cannot_run_is_refused_naming_the_task_and_field(client):
    bad_handler = chain()
    bad_handler["tasks"][1]["handler"] = "llm"
    dangling = chain()
    dangling["tasks"][0]["transition"]["branches"][0]["goto"] = "replies"
    typed = chain()
    typed["tasks"][1]["retry_on_failure"] = "2"
    cases = [
        ({"id": "", "tasks": chain()["tasks"]}, "task chain ID is required"),
        ({"id": "x", "tasks": []}, "task chain must contain at least one task"),
        (bad_handler, "task reply: handler: unknown handler 'llm'"),
        (dangling, "task classify: transition.branches[0].goto: no task 'replies' in the chain"),
        (typed, "tasks[1].retry_on_failure: expected an integer"),
        ({"id": "x", "tasks": [{"id": "a", "handler": "noop"}, {"id": "b", "handler": "noop"}]},
         "task b: unreachable"),
    ]
    for body, fragment in cases:
        status, answer = await call(client, "POST", "/taskchains", body)
        assert_error(status, answer, 422, fragment)
    await call(client, "POST", "/taskchains", chain())
    status, answer = await call(client, "PUT", "/taskchains/triage", chain("other"))
    assert_error(status, answer, 422, "serverops: unprocessable entity: ID in payload does not match URL")
    status, answer = await call(client, "PUT", "/taskchains/triage", bad_handler)
    assert_error(status, answer, 422, "unknown handler 'llm'")
    assert await call(client, "GET", "/taskchains/triage") == (200, answered())


async def _page(client, **params) -> tuple[int, object, str | None]:
    async with client.request("GET", "/taskchains", params=params) as response:
        return response.status, await response.json(), response.headers.get("X-Next-Cursor")


async def test_chains_are_listed_newest_first_a_page_at_a_time(client):
    for name in ("a", "b", "c"):
        await call(client, "POST", "/taskchains", chain(name))
    await call(client, "POST", "/taskchains", chain("a", description="updated"))  # keeps its place
    status, first, cursor = await _page(client, limit="2")
    assert status == 200 and [c["id"] for c in first] == ["c", "b"]
    status, rest, last_cursor = await _page(client, limit="1", cursor=cursor)
    assert [(c["id"], c["description"]) for c in rest] == [("a", "updated")]
    status, seeded, seeded_cursor = await _page(client, cursor=last_cursor)
    assert {c["id"] for c in seeded} == SEEDED  # stored at start-up, before the others
    status, empty, none = await _page(client, cursor=seeded_cursor)
    assert (empty, none) == ([], None)
    for params, expected, fragment in [
        ({"limit": "0"}, 422, "limit must be positive"),
        ({"limit": "ten"}, 422, "invalid limit format, expected integer"),
        ({"cursor": "yesterday"}, 422, "invalid cursor format, expected RFC3339Nano"),
        ({"limit": "1001"}, 400, "limit"),
    ]:
        status, body = await call(client, "GET", "/taskchains", params=params)
        assert_error(status, body, expected, fragment)
