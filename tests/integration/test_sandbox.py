"""The function sandbox with real worker processes: the script contract (spec §4.5), host calls, the
limits, and what happens to workers that overrun, die or are cancelled."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from chainloom.infra.sandbox import Limits, Outcome, Run, SandboxPool, event_object
from chainloom.infra.sandbox.contract import MAX_CONSOLE_LINE_CHARS, MAX_CONSOLE_LINES

ENVELOPE = {
    "id": "e-1",
    "nid": 42,
    "created_at": "2025-03-01T10:04:05.123456789Z",
    "event_type": "user.created",
    "event_source": "signup",
    "aggregate_id": "u-7",
    "aggregate_type": "user",
    "version": 1,
    "data": {"email": "ada@example.com"},
    "metadata": {"trace": "t-1"},
}
EVENT = event_object(ENVELOPE)


class Host:
    """A host that records its calls and answers as the spec's host functions do."""

    def __init__(self, delay: float = 0.0, fail: str = "") -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        self.delay = delay
        self.fail = fail

    async def __call__(self, name: str, arguments: list[Any]) -> Any:
        self.calls.append((name, arguments))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise LookupError(self.fail)
        return {"success": True, "event_id": f"func-gen-{len(self.calls)}"}


@pytest.fixture
async def pools() -> AsyncIterator[Callable[..., SandboxPool]]:
    """Make pools (``pools(size, timeout=…)``); all are closed after the test."""
    made: list[SandboxPool] = []

    def make(size: int = 1, **limits: Any) -> SandboxPool:
        made.append(SandboxPool(size, Limits(**{"timeout": 1.0, **limits})))
        return made[-1]

    yield make
    for pool in made:
        await pool.close()


@pytest.fixture
async def pool(pools: Callable[..., SandboxPool]) -> SandboxPool:
    return pools()


async def run(pool: SandboxPool, script: str, function: str = "f", host: Any = None) -> Outcome:
    return await pool.run(Run(function, script, EVENT), host or Host())


def alive(pid: int) -> bool:
    """Whether the process runs (a killed worker not yet reaped is a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


async def ended(pid: int) -> bool:
    """Whether the process has ended, within a second (a worker is killed and reaped in the background)."""
    for _ in range(100):
        if not alive(pid):
            return True
        await asyncio.sleep(0.01)
    return False


# The script contract


async def test_the_spec_example_runs_and_calls_its_host(pool: SandboxPool):
    script = (
        "function audit_user(event) { var r = sendEvent(\"user.audited\", "
        "{user: event.aggregateID, email: event.data.email}); return {ok: r.success}; }"
    )
    host = Host()
    outcome = await run(pool, script, "audit_user", host)
    assert outcome == Outcome(True, {"ok": True}, "", outcome.duration_ms)
    assert host.calls == [("sendEvent", ["user.audited", {"user": "u-7", "email": "ada@example.com"}])]
    assert outcome.duration_ms > 0


async def test_scripts_see_the_event_in_camel_case(pool: SandboxPool):
    outcome = await run(pool, "function f(e) { return {same: e === event, event: e} }")
    assert outcome.result == {
        "same": True,
        "event": {
            "id": "e-1",
            "nid": 42,
            "createdAt": "2025-03-01T10:04:05.123456789Z",
            "eventType": "user.created",
            "eventSource": "signup",
            "aggregateID": "u-7",
            "aggregateType": "user",
            "version": 1,
            "data": {"email": "ada@example.com"},
            "metadata": {"trace": "t-1"},
        },
    }


async def test_without_a_function_of_that_name_the_global_result_is_the_result(pool: SandboxPool):
    assert (await run(pool, "var before = result; result = {before: before, type: event.eventType}")).result == {
        "before": None,
        "type": "user.created",
    }
    outcome = await run(pool, "function other() { return {x: 1} }")
    assert (outcome.ok, outcome.result, outcome.error) == (True, None, "")


async def test_top_level_let_and_const_count_as_globals(pool: SandboxPool):
    assert (await run(pool, "const f = (e) => ({nid: e.nid})")).result == {"nid": 42}
    assert (await run(pool, "let result = {lexical: true}", function="absent")).result == {"lexical": True}


async def test_the_function_is_called_with_this_undefined_after_the_top_level(pool: SandboxPool):
    script = 'var order = ["top"]; function f(e) { "use strict"; order.push("call"); return {order: order, self: typeof this} }'
    assert (await run(pool, script)).result == {"order": ["top", "call"], "self": "undefined"}


@pytest.mark.parametrize("value", ["null", "undefined"])
async def test_null_or_undefined_is_no_result(pool: SandboxPool, value: str):
    outcome = await run(pool, f"function f() {{ return {value} }}")
    assert (outcome.ok, outcome.result, outcome.error) == (True, None, "")


@pytest.mark.parametrize(
    ("value", "kind"),
    [("5", "number"), ('"text"', "string"), ("true", "boolean"), ("[1, 2]", "array"), ("function () {}", "function"),
     ("10n", "bigint"), ("new Date(0)", "string"), ("{toJSON: function () { return [1] }}", "array")],
)
async def test_a_result_that_is_not_an_object_fails_the_run(pool: SandboxPool, value: str, kind: str):
    outcome = await run(pool, f"function f() {{ return {value} }}")
    assert (outcome.ok, outcome.result, outcome.error) == (False, None, f"result must be an object, got {kind}")


async def test_a_name_that_is_not_callable_fails_the_run(pool: SandboxPool):
    assert (await run(pool, "var f = {a: 1}")).error == "f is not a function"
    assert (await run(pool, "var audit = 3", function="audit")).error == "audit is not a function"


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ('function f() { throw new Error("boom") }', "Error: boom"),
        ('throw new TypeError("at the top")', "TypeError: at the top"),
        ('function f() { throw "plain" }', "plain"),
        ("function f() { return missing.x }", "ReferenceError: 'missing' is not defined"),
        ("function f( {", "SyntaxError: invalid property name"),
        ('import * as os from "os"', "SyntaxError: expecting '('"),
    ],
)
async def test_errors_fail_the_run_with_their_message(pool: SandboxPool, script: str, error: str):
    outcome = await run(pool, script)
    assert (outcome.ok, outcome.result, outcome.error) == (False, None, error)


async def test_a_promise_result_is_settled(pool: SandboxPool):
    assert (await run(pool, "async function f(e) { var r = await Promise.resolve(e.nid); return {nid: r} }")).result == {"nid": 42}
    assert (await run(pool, 'result = Promise.resolve({top: "level"})', function="absent")).result == {"top": "level"}
    rejected = await run(pool, 'async function f() { throw new RangeError("late") }')
    assert (rejected.ok, rejected.error) == (False, "RangeError: late")
    assert (await run(pool, "function f() { return new Promise(function () {}) }")).error == (
        "the result promise never settled"
    )
    assert (await run(pool, "async function f() { return 7 }")).error == "result must be an object, got number"


async def test_results_keep_unicode(pool: SandboxPool):
    outcome = await run(pool, r'function f() { return {text: "héllo wörld ✓ 日本語 😀", lone: "\ud800", "ключ": 1} }')
    assert outcome.result == {"text": "héllo wörld ✓ 日本語 😀", "lone": "\ud800", "ключ": 1}
    unicode_event = {**EVENT, "data": {"name": "Zoë 😀", "lone": "\udc00"}}
    echoed = await pool.run(Run("f", "function f(e) { return e.data }", unicode_event), Host())
    assert echoed.result == {"name": "Zoë 😀", "lone": "\udc00"}


async def test_a_result_larger_than_the_limit_fails_the_run(pools):
    pool = pools(max_result_bytes=1000)
    assert (await run(pool, 'function f() { return {s: "x".repeat(900)} }')).ok
    outcome = await run(pool, 'function f() { return {s: "x".repeat(1000)} }')
    assert (outcome.ok, outcome.error) == (False, "the result is larger than 1000 bytes (1008)")


async def test_every_run_has_a_fresh_context(pool: SandboxPool):
    first = await run(pool, "var leaked = 1; globalThis.set = 2; Object.prototype.polluted = 3; JSON.parse = null; result = {}")
    assert first.ok
    second = await run(
        pool,
        "result = {leaked: typeof leaked, set: typeof set, polluted: typeof ({}).polluted, parse: typeof JSON.parse}",
    )
    assert second.result == {"leaked": "undefined", "set": "undefined", "polluted": "undefined", "parse": "function"}
    assert len(pool.pids) == 1  # both ran in the one worker


# Nothing but the contract is reachable


STANDARD_GLOBALS = {
    "Object", "Function", "Error", "EvalError", "RangeError", "ReferenceError", "SyntaxError", "TypeError",
    "URIError", "InternalError", "AggregateError", "Array", "parseInt", "parseFloat", "isNaN", "isFinite",
    "decodeURI", "decodeURIComponent", "encodeURI", "encodeURIComponent", "escape", "unescape", "Infinity", "NaN",
    "undefined", "Number", "Boolean", "String", "Math", "Reflect", "Symbol", "eval", "globalThis", "Date", "RegExp",
    "JSON", "Proxy", "Map", "Set", "WeakMap", "WeakSet", "ArrayBuffer", "SharedArrayBuffer", "Uint8ClampedArray",
    "Int8Array", "Uint8Array", "Int16Array", "Uint16Array", "Int32Array", "Uint32Array", "BigInt64Array",
    "BigUint64Array", "Float32Array", "Float64Array", "DataView", "Atomics", "Promise", "BigInt",
    "__date_clock",  # QuickJS's own clock behind Date
}  # fmt: skip
CONTRACT_GLOBALS = {"event", "result", "console", "sendEvent", "executeTask", "executeTaskChain", "callTaskChain"}


async def test_the_globals_are_the_standard_ones_and_the_contract(pool: SandboxPool):
    outcome = await run(pool, "result = {names: Object.getOwnPropertyNames(globalThis)}")
    assert set(outcome.result["names"]) == STANDARD_GLOBALS | CONTRACT_GLOBALS


@pytest.mark.parametrize(
    "name",
    ["setTimeout", "setInterval", "require", "module", "process", "fetch", "XMLHttpRequest", "WebSocket", "os", "std",
     "print", "scriptArgs", "Deno", "Bun", "__chainloom_host", "__chainloom_console", "importScripts"],
)  # fmt: skip
async def test_nothing_else_is_reachable(pool: SandboxPool, name: str):
    assert (await run(pool, f"result = {{type: typeof {name}}}")).result == {"type": "undefined"}


@pytest.mark.parametrize("module", ["os", "std", "./secrets.js", "/etc/passwd", "https://example.com/x.js"])
async def test_modules_cannot_be_imported(pool: SandboxPool, module: str):
    script = (
        f'var seen; import("{module}").then(function () {{ seen = "loaded" }}, function (e) {{ seen = String(e) }});'
        " function f() { return {seen: seen} }"
    )
    refused = f"ReferenceError: could not load module '{module.removeprefix('./')}'"
    assert (await run(pool, script)).result == {"seen": refused}


async def test_the_worker_gets_no_secrets_from_the_environment(pools, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CHAINLOOM_SANDBOX_TEST_SECRET", "hunter2")
    pool = pools()
    assert (await run(pool, "result = {}")).ok
    [pid] = pool.pids
    assert b"hunter2" not in Path(f"/proc/{pid}/environ").read_bytes()


# Host functions


async def test_host_functions_get_their_arguments_as_json(pool: SandboxPool):
    host = Host()
    script = """function f() {
        sendEvent("a.b", {n: 1, nested: {list: [1, "x", null]}});
        sendEvent("no.data");
        sendEvent(7, null);
        executeTask("Say hi", "phi3", "ollama");
        executeTask("only a prompt");
        executeTaskChain("chain-1", {input: "x"});
        callTaskChain("chain-2", {});
        return {}
    }"""
    assert (await run(pool, script, host=host)).ok
    assert host.calls == [
        ("sendEvent", ["a.b", {"n": 1, "nested": {"list": [1, "x", None]}}]),
        ("sendEvent", ["no.data", None]),
        ("sendEvent", ["7", None]),
        ("executeTask", ["Say hi", "phi3", "ollama"]),
        ("executeTask", ["only a prompt", "", ""]),
        ("executeTaskChain", ["chain-1", {"input": "x"}]),
        ("callTaskChain", ["chain-2", {}]),
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ('sendEvent("t", 5)', "sendEvent: data must be an object"),
        ('sendEvent("t", "text")', "sendEvent: data must be an object"),
        ('sendEvent("t", [1])', "sendEvent: data must be an object"),
        ('sendEvent("t", new Date(0))', "sendEvent: data must be an object"),
        ('executeTaskChain("c", 1)', "executeTaskChain: input must be an object"),
        ('callTaskChain("c", function () {})', "callTaskChain: input must be an object"),
        ('sendEvent("t", {n: 1n})', "bigint are forbidden in JSON.stringify"),
        ('var o = {}; o.self = o; sendEvent("t", o)', "circular reference"),
    ],
)
async def test_arguments_that_are_not_objects_raise_a_type_error_in_the_script(pool: SandboxPool, call: str, message: str):
    host = Host()
    script = f"function f() {{ try {{ {call}; return {{}} }} catch (e) {{ return {{name: e.name, message: e.message}} }} }}"
    outcome = await run(pool, script, host=host)
    assert outcome.result["name"] == "TypeError" and message in outcome.result["message"]
    assert host.calls == []


async def test_a_failing_host_answers_a_failure_object(pool: SandboxPool):
    outcome = await run(pool, 'function f() { return executeTaskChain("gone", {}) }', host=Host(fail="chain not found"))
    assert outcome.result == {"success": False, "error": "chain not found"}


async def test_a_host_slower_than_its_timeout_answers_operation_timed_out(pools):
    pool = pools(host_call_timeout=0.2)
    started = time.monotonic()
    outcome = await run(pool, 'function f() { var r = sendEvent("t", {}); return {r: r, after: true} }', host=Host(delay=5))
    assert outcome.result == {"r": {"success": False, "error": "operation timed out"}, "after": True}
    assert time.monotonic() - started < 2


async def test_an_answer_that_is_not_json_fails_the_call(pool: SandboxPool):
    async def host(name: str, arguments: list[Any]) -> Any:
        return {"when": object()}

    outcome = await run(pool, 'function f() { return sendEvent("t", {}) }', host=host)
    assert outcome.result["success"] is False and "not JSON" in outcome.result["error"]


async def test_time_in_host_calls_does_not_count_against_the_script(pools):
    pool = pools(timeout=0.5)
    script = 'function f() { for (var i = 0; i < 4; i++) sendEvent("t", {i: i}); return {done: true} }'
    outcome = await run(pool, script, host=Host(delay=0.2))
    assert outcome.result == {"done": True}
    assert outcome.duration_ms >= 800  # the whole run, host calls included


async def test_a_run_started_inside_a_host_call_does_not_wait_for_its_caller(pools):
    pool = pools(size=1)

    async def host(name: str, arguments: list[Any]) -> Any:
        if arguments[0] == "outer":  # as dispatching the event a script sent runs the functions listening for it
            inner = await pool.run(Run("g", 'function g(e) { return sendEvent("inner", {}) }', EVENT), host)
            return {"success": True, "inner": inner.result}
        return {"success": True, "event_id": "inner-id"}

    outcome = await run(pool, 'function f() { return sendEvent("outer", {}) }', host=host)
    assert outcome.result == {"success": True, "inner": {"success": True, "event_id": "inner-id"}}
    assert len(pool.pids) == 1  # the extra worker ended after its run


async def test_console_lines_are_logged_with_the_function_name(pool: SandboxPool, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG, logger="chainloom.functions")
    script = """function f() {
        console.log("plain", 1, {a: [1, 2]}, null, undefined, true);
        console.info("info"); console.warn("warn"); console.error(new Error("bad")); console.debug("debug");
        console.log("lone \\ud800 surrogate");
    }"""
    assert (await run(pool, script)).ok
    logged = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    assert logged == [
        ("chainloom.functions", "INFO", 'function f: plain 1 {"a":[1,2]} null undefined true'),
        ("chainloom.functions", "INFO", "function f: info"),
        ("chainloom.functions", "WARNING", "function f: warn"),
        ("chainloom.functions", "ERROR", "function f: Error: bad"),
        ("chainloom.functions", "DEBUG", "function f: debug"),
        ("chainloom.functions", "INFO", "function f: lone ? surrogate"),
    ]


async def test_console_output_is_bounded(pool: SandboxPool, caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="chainloom.functions")
    script = 'function f() { console.log("x".repeat(100000)); for (var i = 0; i < 5000; i++) console.log(i); return {} }'
    assert (await run(pool, script)).ok
    lines = [r.getMessage().removeprefix("function f: ") for r in caplog.records]
    assert lines[0] == "x" * MAX_CONSOLE_LINE_CHARS + "..."
    assert lines[1:-1] == [str(i) for i in range(MAX_CONSOLE_LINES - 1)]
    assert lines[-1] == f"... more console output dropped (at most {MAX_CONSOLE_LINES} lines a run)"


# Limits and workers


async def test_an_endless_loop_is_killed_at_the_timeout_and_the_worker_replaced(pools):
    pool = pools(timeout=0.5)
    assert (await run(pool, "result = {}")).ok
    [first] = pool.pids
    outcome = await run(pool, "function f() { for (;;) {} }")
    assert (outcome.ok, outcome.error) == (False, "script timed out after 0.5s")
    assert 450 < outcome.duration_ms < 2000
    assert await ended(first)
    assert (await run(pool, "result = {again: true}")).result == {"again": True}
    assert pool.pids != (first,)


async def test_endless_promise_jobs_meet_the_timeout_too(pools):
    pool = pools(timeout=0.5)
    script = "function f() { return new Promise(function loop() { Promise.resolve().then(loop) }) }"
    assert (await run(pool, script)).error == "script timed out after 0.5s"


async def test_a_huge_allocation_runs_out_of_memory_and_the_worker_carries_on(pools):
    pool = pools(memory_bytes=16 * 2**20)
    outcome = await run(pool, 'function f() { var s = "x"; for (;;) s = s + s }')
    assert (outcome.ok, outcome.error) == (False, "InternalError: out of memory")
    outcome = await run(pool, "function f() { var a = []; for (;;) a.push(new Array(100000).fill(1)) }")
    assert (outcome.ok, outcome.error) == (False, "InternalError: out of memory")
    [pid] = pool.pids
    assert (await run(pool, "result = {fine: true}")).result == {"fine": True}
    assert pool.pids == (pid,)


async def test_the_process_has_an_address_space_limit_as_a_backstop(pool: SandboxPool):
    assert (await run(pool, "result = {}")).ok
    [pid] = pool.pids
    [line] = [line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if line.startswith("Max address space")]
    soft = line.split()[3]
    assert soft != "unlimited" and int(soft) < 2**31


async def test_deep_recursion_overflows_the_stack(pool: SandboxPool):
    outcome = await run(pool, "function f(e, n) { return f(e, (n || 0) + 1) }")
    assert (outcome.ok, outcome.error) == (False, "InternalError: stack overflow")


async def test_a_worker_killed_mid_run_fails_the_run_and_the_next_one_works(pool: SandboxPool):
    async def host(name: str, arguments: list[Any]) -> Any:
        [pid] = pool.pids
        asyncio.get_running_loop().call_later(0.1, os.kill, pid, signal.SIGKILL)
        return {"success": True}

    outcome = await run(pool, 'function f() { sendEvent("started", {}); for (;;) {} }', host=host)
    assert (outcome.ok, outcome.error) == (False, "the sandbox process died (SIGKILL)")
    assert (await run(pool, "result = {next: true}")).result == {"next": True}


# A service that holds a sandbox pool, killed while its worker runs an endless loop.
SERVICE_KILLED_MID_RUN = """
import asyncio
from chainloom.infra.sandbox import Limits, Run, SandboxPool

async def main():
    pool = SandboxPool(1, Limits(timeout=60))

    async def host(name, arguments):  # told once the script is in its loop, not waiting for this answer
        asyncio.get_running_loop().call_later(0.1, lambda pid=pool.pids[0]: print(pid, flush=True))
        return {}

    await pool.run(Run("f", 'sendEvent("started", {}); for (;;) {}', {}), host)

asyncio.run(main())
"""


async def test_a_worker_ends_with_its_parent():
    service = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVICE_KILLED_MID_RUN, stdout=asyncio.subprocess.PIPE
    )
    assert service.stdout is not None
    pid = int(await asyncio.wait_for(service.stdout.readline(), 30))
    service.kill()
    await service.wait()
    assert await ended(pid)


async def test_a_worker_killed_while_idle_is_replaced(pool: SandboxPool):
    assert (await run(pool, "result = {}")).ok
    [pid] = pool.pids
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):  # until the pool's child watcher has reaped it
        if not Path(f"/proc/{pid}").exists():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert (await run(pool, "result = {next: true}")).result == {"next": True}
    assert pid not in pool.pids


async def test_a_cancelled_run_ends_its_worker(pool: SandboxPool):
    entered = asyncio.Event()

    async def host(name: str, arguments: list[Any]) -> Any:
        entered.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(run(pool, 'function f() { sendEvent("t", {}) }', host=host))
    await entered.wait()
    [pid] = pool.pids
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await ended(pid)
    assert (await run(pool, "result = {next: true}")).result == {"next": True}


async def test_concurrent_runs_share_at_most_size_workers(pools):
    pool = pools(size=2)
    inside, most = 0, 0

    async def host(name: str, arguments: list[Any]) -> Any:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await asyncio.sleep(0.05)
        inside -= 1
        return {"success": True, "seen": arguments[1]["nid"]}

    script = 'function f(e) { var r = sendEvent("t", {nid: e.nid}); return {nid: e.nid, seen: r.seen} }'
    runs = [Run("f", script, {**EVENT, "nid": n}) for n in range(20)]
    outcomes = await asyncio.gather(*(pool.run(r, host) for r in runs))
    assert [o.result for o in outcomes] == [{"nid": n, "seen": n} for n in range(20)]
    assert most == 2
    assert len(pool.pids) == 2


async def test_close_ends_the_workers_and_later_runs_fail(pools):
    pool = pools(size=2)
    entered = asyncio.Event()

    async def host(name: str, arguments: list[Any]) -> Any:
        entered.set()
        return {"success": True}

    running = asyncio.create_task(run(pool, 'function f() { sendEvent("t", {}); for (;;) {} }', host=host))
    await entered.wait()
    [pid] = pool.pids
    await pool.close()
    assert (await running).error == "the sandbox is closed"
    assert pool.pids == () and not alive(pid)
    assert (await run(pool, "result = {}")).error == "the sandbox is closed"


async def test_a_run_that_cannot_be_sent_fails_without_a_worker(pool: SandboxPool):
    outcome = await pool.run(Run("f", "result = {}", {**EVENT, "data": {"bad": float("nan")}}), Host())
    assert not outcome.ok and outcome.error.startswith("the run cannot be sent to the sandbox")
    assert pool.pids == ()


# The event object


def test_event_object_defaults_missing_fields():
    assert event_object({"event_type": "t", "nid": 3}) == {
        "id": "", "nid": 3, "createdAt": "", "eventType": "t", "eventSource": "", "aggregateID": "",
        "aggregateType": "", "version": 0, "data": {}, "metadata": {},
    }  # fmt: skip


@pytest.mark.parametrize("field", ["data", "metadata"])
@pytest.mark.parametrize("value", [None, [1], "text", 3])
def test_event_object_refuses_data_that_is_not_an_object(field: str, value: Any):
    with pytest.raises(ValueError, match=f"event {field} is not a JSON object"):
        event_object({**ENVELOPE, field: value})
