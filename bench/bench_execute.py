"""What chainloom adds to a prompt: ``POST /execute`` against a fake provider versus calling the fake directly;
and to a streamed chat's time to first token (TTFT): ``ExecutionService.chat_stream`` versus the bare client.

    .venv/bin/python bench/bench_execute.py              # SQLite (the store is not on the path of /execute), then TTFT
    bench/run bench/bench_execute.py                     # also on a durable throwaway PostgreSQL
    .venv/bin/python bench/bench_execute.py --only ttft  # only the streamed chat part (or --only execute)

A deterministic fake Ollama (tests/fakes/llm.py, answering at once) runs as its own process. wrk drives,
over loopback, first the fake's ``POST /api/generate`` directly (the body chainloom sends it), then
chainloom's ``POST /execute`` (one worker process: ``chainloom serve --workers 1``), whose task
model is on that fake through a grouped backend the reconciler has observed. Both at 1 connection
(the latency chainloom adds: the p50/p99 differences) and at 16 (throughput). chainloom's CPU per
request is the user + system time of its processes over a run, divided by the requests answered
(``--workers N`` runs N worker processes instead of one).

The figures are the machine's: fake, chainloom and wrk share its cores (and, when it is busy, with
whatever else runs). Figures only: nothing is asserted. Aims: at most 0.8 ms added per /execute at
concurrency 1, at least 1,500 /execute/s at 16 connections.

Streamed chat (printed after, in a section of its own): no HTTP endpoint serves it yet, so it is measured at
the service level, in this process, on uvloop as the service runs. A fake Ollama in its own process streams
its reply as several pieces (``/api/chat``, NDJSON), the first at once. Two paths share one set of provider
clients (``infra.providers.open_clients``, so one session and one adapter): the bare Ollama client's
``chat_stream`` (the baseline), and ``ExecutionService.chat_stream``, which reads the runtime's state, routes
(capability "stream"), orders the candidates and calls the same client. The state read model is a stand-in
returning one fixed ``BackendState`` (the fake, holding the model with canChat/canStream) — it is not what is
measured — and the API keys a stand-in answering None. TTFT is the time from the call to the first piece;
each stream is then read to its end. Both at 1 streamer (N sequential streams) and at 16 concurrent
streamers (N streams in all), the two paths run in alternating rounds so that the machine's other load falls
on both alike; "chainloom adds" is the p50/p99 difference, and CPU per stream is this process's
``time.process_time`` over a path's streams divided by their number (the client's work included: the
difference is chainloom's). Before, one stream from a fake waiting between its pieces checks that the first
piece arrives at once, not with the rest. Aim: TTFT added of the same order as /execute's, at most 0.8 ms at
p50 at concurrency 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import WrkResult, service, url_process, wrk  # noqa: E402
from chainloom.commands.execution import TASK_INSTRUCTION  # noqa: E402

MODEL = "phi3:3.8b"  # the fake Ollama holds it, and it is the default task model
PROMPT = "What is the capital of France? Answer with one word."

DIRECT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%s'
wrk.path = "/api/generate"
""" % json.dumps(
    {"model": MODEL, "prompt": PROMPT, "system": TASK_INSTRUCTION, "stream": False, "think": False,
     "options": {"temperature": 0.1}}
)

EXECUTE = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%s'
wrk.path = "/execute"
""" % json.dumps({"prompt": PROMPT})


@contextmanager
def fake_ollama() -> Iterator[str]:
    """The fake Ollama in its own process; yields its base URL."""
    with url_process([sys.executable, "-m", "tests.fakes.llm", "ollama"]) as url:
        yield url


def _json(base: str, method: str, path: str, body: object = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def group_the_fake(base: str, fake_url: str) -> None:
    """A backend on the fake in the tasks group; returns once the reconciler has seen it hold the model."""
    backend = _json(base, "POST", "/backends", {"name": "fake-ollama", "baseUrl": fake_url, "type": "ollama"})
    _json(base, "POST", f"/backend-affinity/internal_tasks_group/backends/{backend['id']}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = _json(base, "GET", "/state")
        if any(s["id"] == backend["id"] and any(p["name"] == MODEL for p in s["pulledModels"]) for s in states):
            answer = _json(base, "POST", "/execute", {"prompt": PROMPT})
            assert answer["response"], answer
            return
        time.sleep(0.2)
    raise RuntimeError("the reconciler never showed the fake backend holding the model")


def cpu_seconds(group: int) -> float:
    """User + system CPU seconds of every process in a process group (chainloom serve and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def measured(base: str, lua: str, seconds: float, connections: int, group: int | None = None) -> tuple[WrkResult, float]:
    """A wrk run, and the CPU milliseconds per request of process group ``group`` during it."""
    before = cpu_seconds(group) if group else 0.0
    result = wrk(base, lua, seconds=seconds, connections=connections)
    cpu = (cpu_seconds(group) - before) / result.requests * 1000 if group and result.requests else 0.0
    return result, cpu


def run(database_url: str, seconds: float, workers: int) -> None:
    with fake_ollama() as fake_url:
        wrk(fake_url, DIRECT, seconds=1, connections=4)  # warm-up
        direct = {c: measured(fake_url, DIRECT, seconds, c)[0] for c in (1, 16)}
        with service(database_url, CHAINLOOM_WORKERS=str(workers), CHAINLOOM_RECONCILE_INTERVAL="1") as base:
            group_the_fake(base, fake_url)
            group = os.getpgid(_json(base, "GET", "/ready")["pid"])  # the service runs in a session of its own
            wrk(base, EXECUTE, seconds=1, connections=4)  # warm-up
            execute = {c: measured(base, EXECUTE, seconds, c, group) for c in (1, 16)}
    for c in (1, 16):
        print(direct[c].line(f"fake Ollama directly, {c} conn"))
        result, cpu = execute[c]
        print(result.line(f"POST /execute, {c} conn"))
        print(
            f"{'  chainloom adds':<38} p50 {result.p50_ms - direct[c].p50_ms:+7.2f} ms   "
            f"p99 {result.p99_ms - direct[c].p99_ms:+7.2f} ms   chainloom CPU {cpu:.2f} ms/request"
        )


# -- streamed chat: time to first token -------------------------------------------------------------------

STREAM_PIECES = ["Paris", " is", " the", " capital", " of", " France", "."]  # the fake's reply, piece by piece
CHECK_DELAY = 0.05  # seconds between pieces of the fake checked for answering the first piece at once
TTFT_ROUNDS = 4  # alternating rounds of the two paths, per concurrency

# The fake Ollama holding MODEL and streaming STREAM_PIECES (argv: chunk delay, then the pieces).
STREAMING_FAKE = """
import asyncio, sys
from tests.fakes.llm import FakeOllama

class Discard(list):
    def append(self, item):
        pass

async def main():
    fake = FakeOllama()
    fake.add_model(%r)
    fake.chunk_delay = float(sys.argv[1])
    fake.reply = sys.argv[2:]
    async with fake:
        print(fake.url, flush=True)
        fake.requests = Discard()  # a long run must not grow without end
        await asyncio.Event().wait()

asyncio.run(main())
""" % MODEL


@contextmanager
def streaming_fake(chunk_delay: float = 0.0) -> Iterator[str]:
    """A fake Ollama in its own process streaming STREAM_PIECES, ``chunk_delay`` seconds apart; yields its URL.

    With a delay its errors are not shown: the client stops reading at the "done" line, and the fake, which
    waits after every piece, then finds the connection closed when it ends the body (a traceback, harmless)."""
    with url_process([sys.executable, "-c", STREAMING_FAKE, str(chunk_delay), *STREAM_PIECES], quiet=bool(chunk_delay)) as url:
        yield url


class FixedStates:
    """The runtime's state, as a stand-in: always the same list (the read model is not what is measured)."""

    def __init__(self, states: list) -> None:
        self._states = states

    async def states(self) -> list:
        return self._states


class NoKeys:
    async def api_key(self, provider_type: str) -> str | None:
        return None


def run_ttft(streams: int) -> None:
    import uvloop  # as the service runs (web/workers.py)

    with streaming_fake(CHECK_DELAY) as slow_url, streaming_fake() as fake_url:
        uvloop.run(_ttft(slow_url, fake_url, streams))


async def _ttft(slow_url: str, fake_url: str, streams: int) -> None:
    from bench.harness import Timings
    from chainloom.commands.execution import Defaults, ExecutionService
    from chainloom.domain.runtime import BackendState, PulledModel
    from chainloom.infra.providers import open_clients
    from chainloom.infra.providers.base import Endpoint, Message
    from chainloom.infra.settings import Settings

    messages = [Message("user", PROMPT)]
    pulled = PulledModel(name=MODEL, model=MODEL, context_length=2048, can_chat=True, can_prompt=True, can_stream=True)
    defaults = Defaults(MODEL, "ollama", MODEL, "ollama", "nomic-embed-text:latest", "ollama")

    def execution(url: str, clients) -> ExecutionService:
        state = BackendState("fake-ollama-id", "fake-ollama", "ollama", url, (MODEL,), (pulled,))
        return ExecutionService(FixedStates([state]), NoKeys(), clients, defaults)

    async with open_clients(Settings()) as clients:
        # The fake answers its first piece at once, not with the rest: one stream from a fake waiting
        # CHECK_DELAY between pieces, on each path.
        slow = execution(slow_url, clients)
        for label, open_stream in (
            ("bare client", lambda: clients.client(Endpoint("ollama", slow_url)).chat_stream(MODEL, messages)),
            ("chainloom", lambda: slow.chat_stream(messages, model_names=(MODEL,))),
        ):
            out: list[float] = []
            started = time.perf_counter()
            pieces = [piece async for piece in _first_then_rest(open_stream(), started, out)]
            total = time.perf_counter() - started
            assert pieces == STREAM_PIECES, pieces
            assert out[0] < CHECK_DELAY < total, (out[0], total)
            print(
                f"fake check ({label}): first piece after {out[0] * 1000:.1f} ms of a {total * 1000:.0f} ms stream "
                f"({len(STREAM_PIECES)} pieces {CHECK_DELAY * 1000:.0f} ms apart)"
            )

        direct_client = clients.client(Endpoint("ollama", fake_url))
        service = execution(fake_url, clients)
        paths = {
            "bare client chat_stream": lambda: direct_client.chat_stream(MODEL, messages),
            "chainloom chat_stream": lambda: service.chat_stream(messages, model_names=(MODEL,)),
        }
        for open_stream in paths.values():  # warm-up: connections, caches, the routing remembered
            await _streams(open_stream, 4, max(50, streams // 20), Timings())
        for streamers in (1, 16):
            timings = {label: Timings() for label in paths}
            cpu = dict.fromkeys(paths, 0.0)
            per_round = max(1, streams // TTFT_ROUNDS // streamers)
            for round_ in range(TTFT_ROUNDS):
                order = list(paths) if round_ % 2 == 0 else list(reversed(paths))  # both go first as often
                for label in order:
                    cpu[label] += await _streams(paths[label], streamers, per_round, timings[label])
            per_stream = {label: cpu[label] / len(timings[label].latencies) * 1000 for label in paths}
            for label, result in timings.items():
                print(result.line(f"{label}, {streamers} streamer{'s' if streamers > 1 else ''}", "stream") + f"   CPU {per_stream[label]:.3f} ms/stream")
            direct, ours = timings.values()
            direct_cpu, ours_cpu = per_stream.values()
            print(
                f"{'  chainloom adds to TTFT':<38} p50 {ours.percentile(50) - direct.percentile(50):+7.3f} ms   "
                f"p99 {ours.percentile(99) - direct.percentile(99):+7.3f} ms   CPU {ours_cpu - direct_cpu:+.3f} ms/stream"
            )


async def _first_then_rest(stream, started: float, first: list[float]):
    """The pieces of ``stream``, noting in ``first`` when the first arrived (seconds after ``started``)."""
    async for piece in stream:
        if not first:
            first.append(time.perf_counter() - started)
        yield piece


async def _streams(open_stream, streamers: int, per_streamer: int, timings) -> float:
    """``per_streamer`` sequential streams in each of ``streamers`` concurrent streamers, each read to its end;
    their TTFTs are added to ``timings`` (and the wall time to its elapsed). Returns this process's CPU seconds."""
    import asyncio

    latencies = timings.latencies

    async def streamer() -> None:
        for _ in range(per_streamer):
            started = time.perf_counter()
            stream = open_stream()
            try:
                await anext(stream)
                latencies.append(time.perf_counter() - started)
                async for _ in stream:
                    pass
            finally:
                await stream.aclose()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(streamer() for _ in range(streamers)))
    timings.elapsed += time.perf_counter() - wall
    return time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--workers", type=int, default=1, help="chainloom serve's worker processes")
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL (also run there)")
    parser.add_argument("--only", choices=("execute", "ttft"), help="only /execute, or only streamed chat's TTFT")
    parser.add_argument("--streams", type=int, default=2000, help="streams per path and concurrency (TTFT)")
    args = parser.parse_args()
    if args.only != "ttft":
        stores = [("SQLite", "")] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
        for label, url in stores:
            print(f"== {label}: wrk over loopback; chainloom serve, {args.workers} worker(s); fake Ollama in its own process")
            run(url, args.seconds, args.workers)
    if args.only != "execute":
        print(
            f"== streamed chat TTFT: ExecutionService.chat_stream vs the bare Ollama client, in this process on "
            f"uvloop; fake Ollama in its own process ({len(STREAM_PIECES)} pieces)"
        )
        run_ttft(args.streams)


if __name__ == "__main__":
    main()
