"""Conversations (issue 14): chat turns through the seeded ``chat_chain`` and Telegram messages answered by the bot
runtime, against fake providers answering at once.

    .venv/bin/python bench/bench_conversations.py              # SQLite
    bench/run bench/bench_conversations.py                     # also on a durable throwaway PostgreSQL

``chainloom serve`` (one worker process: ``--workers 1``) runs against a fake Ollama in its own process
(tests/fakes/llm.py, answering at once: ``0`` to a rating prompt, ``You said: <the user's message>`` to a chat)
whose backend is in the internal chat and task groups, the seeded ``chat_chain``'s models; and against a fake
Telegram Bot API (tests/fakes/telegram.py) served by this process.

- ``turns``: ``POST /chats/{id}/chat`` driven by this process (aiohttp), at 1 connection and at ``--connections``
  (each connection on chats of its own, ``--turns-per-chat`` turns per chat, so every run sees chats of the same
  lengths). ``/echo`` turns (the chain's command branch: no model call) are the engine and storage floor; an
  ordinary turn makes three calls to the fake (the safety rating, the knowledge-need rating, the chat model).
  The provider's own time per turn: the three requests chainloom sent the fake for a turn of a chat half-way
  through (recorded by the fake), replayed directly to it one after another from this process. "chainloom adds"
  is the turn's p50/p99 minus the replayed turn's; chainloom's CPU per turn is the user + system time of its
  process group over a run divided by the turns (the fake's CPU per turn beside it). This service runs without
  the bot runtime (``CHAINLOOM_TELEGRAM_BOTS=false``); its idle CPU (the reconciler, every second here, and the
  lease reaper looking around) is shown first, and is not subtracted.
- ``history``: ``/echo`` turns on one chat, one after another: the first ten against the last ten of
  ``--long-chat`` turns (a turn reads its chat from the log).
- ``telegram`` (a second service, on the same store, with the bot runtime): a frontend
  (``POST /telegram-frontends``) on the fake Bot API, polled every
  ``--poll-interval`` s. A burst: ``--messages`` messages from ``--users`` users fed at once, timed until every
  reply was sent (messages/s; latency from feeding a message to its reply, which queueing dominates); then
  ``--paced`` messages one at a time, each after the previous reply (latency: the wait for the next poll, up to
  one interval, plus the answer). CPU per message is the service's.

The figures are the machine's: the fakes, chainloom and this driver share its cores (and, when it is busy,
with whatever else runs: CPU per turn is the steadier figure then). Figures only: nothing is asserted. Aim:
chainloom adds under 5 ms per chat turn (engine and storage).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402

from bench.bench_execute import cpu_seconds  # noqa: E402
from bench.harness import Timings, drive, service, url_process  # noqa: E402
from chainloom.infra.settings import Settings  # noqa: E402
from tests.fakes.telegram import FakeTelegram  # noqa: E402

TOKEN = "424242:AAH-bench-bot-token"
MODELS = sorted({Settings.model_fields[f].default for f in ("task_model", "chat_model")})

# The fake Ollama holding the default task and chat models (argv): a rating prompt is answered 0 (harmless,
# needing no documents), a chat "You said: <the last user message>". It keeps the last POSTs it received
# (GET /bench/recent) and tells its CPU time (GET /bench/cpu).
FAKE_LLM = """
import asyncio, collections, sys, time
from aiohttp import web
from tests.fakes.llm import FakeOllama

class Recent:
    def __init__(self):
        self.items = collections.deque(maxlen=16)

    def append(self, item):
        if item[0] == "POST":
            self.items.append(item)

class BenchOllama(FakeOllama):
    def _routes(self, app):
        super()._routes(app)
        app.router.add_get("/bench/recent", self._recent)
        app.router.add_get("/bench/cpu", self._cpu)

    async def _recent(self, request):
        return web.json_response([{"path": path, "body": body} for _, path, body in self.requests.items])

    async def _cpu(self, request):
        return web.json_response({"cpu": time.process_time()})

async def main():
    fake = BenchOllama()
    for name in sys.argv[1:]:
        fake.add_model(name)
    fake.answer = lambda prompt: "0" if "Rate from 0 to 10" in prompt else "You said: " + prompt
    async with fake:
        fake.requests = Recent()
        print(fake.url, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@contextmanager
def fake_llm() -> Iterator[str]:
    with url_process([sys.executable, "-c", FAKE_LLM, *MODELS]) as url:
        yield url


class TimedTelegram(FakeTelegram):
    """The fake Bot API noting when each reply was sent: ``replied`` holds (perf_counter, chat id, text)."""

    def __init__(self) -> None:
        super().__init__()
        self.replied: list[tuple[float, int, str]] = []

    def _send_message(self, token: str, params: dict[str, Any]) -> web.Response:
        response = super()._send_message(token, params)
        if response.status == 200:
            self.replied.append((time.perf_counter(), int(params["chat_id"]), str(params.get("text", ""))))
        return response


async def call(session: aiohttp.ClientSession, method: str, url: str, body: object = None) -> Any:
    async with session.request(method, url, json=body) as response:
        if response.status >= 400:
            raise RuntimeError(f"{method} {url}: {response.status} {await response.text()}")
        return await response.json(content_type=None)


async def eventually(what: str, check, timeout: float = 60.0, pause: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await check():
            return value
        await asyncio.sleep(pause)
    raise RuntimeError(f"timed out waiting for {what}")


async def serve_models(session: aiohttp.ClientSession, base: str, fake_url: str) -> None:
    """A backend on the fake in the internal chat and task groups (unless the store holds it: the second service
    on PostgreSQL); returns once the reconciler has seen it hold the models."""
    backend = next((b for b in await call(session, "GET", base + "/backends") if b["baseUrl"] == fake_url), None)
    if backend is None:
        backend = await call(session, "POST", base + "/backends", {"name": "fake-ollama", "baseUrl": fake_url, "type": "ollama"})
        for group in ("internal_chat_group", "internal_tasks_group"):
            await call(session, "POST", f"{base}/backend-affinity/{group}/backends/{backend['id']}")

    async def held() -> bool:
        states = await call(session, "GET", base + "/state")
        names = {m["name"] for s in states if s["id"] == backend["id"] for m in s["pulledModels"]}
        return set(MODELS) <= names

    await eventually("the reconciler to see the fake's models", held)


class CpuMeter:
    """CPU seconds of chainloom's process group and of the fake provider."""

    def __init__(self, session: aiohttp.ClientSession, group: int, fake_url: str) -> None:
        self._session, self._group, self._fake_url = session, group, fake_url

    async def read(self) -> tuple[float, float]:
        fake = (await call(self._session, "GET", self._fake_url + "/bench/cpu"))["cpu"]
        return cpu_seconds(self._group), fake


# -- chat turns ------------------------------------------------------------------------------------------------


async def turns(session, base: str, meter: CpuMeter, connections: int, total: int, per_chat: int, message: str,
                ) -> tuple[Timings, float, float]:
    """``total`` turns over ``connections`` connections, each on chats of its own of ``per_chat`` turns: the
    timings, chainloom's and the fake's CPU ms per turn."""
    per_worker = max(1, total // connections)
    chats = [[(await call(session, "POST", base + "/chats"))["id"] for _ in range(-(-per_worker // per_chat))]
             for _ in range(connections)]

    async def step(client: aiohttp.ClientSession, w: int, i: int) -> int:
        chat_id = chats[w][i // per_chat]
        body = {"message": message.format(w=w, i=i)}
        async with client.post(f"/chats/{chat_id}/chat", json=body) as response:
            answer = await response.json()
            if response.status != 200:
                raise RuntimeError(f"turn failed: {response.status} {answer}")
        return 1

    before = await meter.read()
    timings = await drive(connections, per_worker, step, base)
    after = await meter.read()
    n = len(timings.latencies)
    return timings, (after[0] - before[0]) / n * 1000, (after[1] - before[1]) / n * 1000


async def provider_turn(session, base: str, fake_url: str, per_chat: int) -> list[dict]:
    """The requests chainloom sends the fake for an ordinary turn of a chat half-way through (``per_chat // 2``
    turns before it)."""
    chat_id = (await call(session, "POST", base + "/chats"))["id"]
    for i in range(max(1, per_chat // 2)):
        answer = await call(session, "POST", f"{base}/chats/{chat_id}/chat", {"message": f"probe turn {i}: what is new?"})
    assert answer["response"].startswith("You said: "), answer
    recent = await call(session, "GET", fake_url + "/bench/recent")
    return recent[-3:]


async def replayed(fake_url: str, requests: list[dict], connections: int, total: int) -> Timings:
    """The provider's own time per turn: ``requests`` sent to it one after another, ``total`` times in all over
    ``connections`` connections."""

    async def step(client: aiohttp.ClientSession, w: int, i: int) -> int:
        for request in requests:
            async with client.post(request["path"], json=request["body"]) as response:
                await response.read()
                assert response.status == 200, response.status
        return 1

    return await drive(connections, max(1, total // connections), step, fake_url)


async def history_growth(session, base: str, long_chat: int) -> tuple[Timings, Timings]:
    """``/echo`` turns on one chat: the first ten and the last ten of ``long_chat``."""
    chat_id = (await call(session, "POST", base + "/chats"))["id"]
    first, last = Timings(), Timings()
    for i in range(long_chat):
        started = time.perf_counter()
        await call(session, "POST", f"{base}/chats/{chat_id}/chat", {"message": f"/echo turn {i}"})
        took = time.perf_counter() - started
        for timings, inside in ((first, i < 10), (last, i >= long_chat - 10)):
            if inside:
                timings.latencies.append(took)
                timings.elapsed += took
    return first, last


# -- telegram --------------------------------------------------------------------------------------------------


async def telegram_messages(telegram: TimedTelegram, feed: list[tuple[int, str]], meter: CpuMeter, timeout: float = 300,
                            ) -> tuple[Timings, float]:
    """Feed ``(user, text)`` messages at once; timed until every one was answered: latencies from feeding to
    reply (a chat's replies come in its messages' order), and chainloom's CPU ms per message."""
    fed: dict[int, deque[float]] = defaultdict(deque)
    already = len(telegram.replied)
    before = await meter.read()
    start = time.perf_counter()
    for user, text in feed:
        fed[user].append(time.perf_counter())
        telegram.user_says(TOKEN, chat_id=user, user_id=user, text=text)
    await eventually("the replies", lambda: asyncio.sleep(0, len(telegram.replied) - already >= len(feed)), timeout, 0.002)
    timings = Timings()
    for at, chat_id, text in telegram.replied[already:]:
        timings.latencies.append(at - fed[chat_id].popleft())
    timings.elapsed = max(at for at, _, _ in telegram.replied[already:]) - start
    after = await meter.read()
    return timings, (after[0] - before[0]) / len(feed) * 1000


# -- a run -----------------------------------------------------------------------------------------------------


def _line(label: str, timings: Timings, cpu: float | None = None, fake_cpu: float | None = None, unit: str = "turn") -> str:
    line = timings.line(label, unit)
    if cpu is not None:
        line += f"   chainloom CPU {cpu:.2f} ms/{unit}"
    if fake_cpu is not None:
        line += f", fake {fake_cpu:.2f}"
    return line


@asynccontextmanager
async def serving(database_url: str, **env: str) -> AsyncIterator[str]:
    """``harness.service``, entered and left off this loop (the fake Bot API's, which must answer meanwhile)."""
    served = service(database_url, **env)
    base = await asyncio.to_thread(served.__enter__)
    try:
        yield base
    finally:
        await asyncio.to_thread(served.__exit__, None, None, None)


async def run(database_url: str, args: argparse.Namespace) -> None:
    """Two services one after the other, on the same store: the chat turns without the bot runtime (whose
    polling every ``--poll-interval`` would weigh on their CPU figures), then the Telegram figures."""
    env = {
        "CHAINLOOM_WORKERS": str(args.workers),
        "CHAINLOOM_RECONCILE_INTERVAL": "1",
        # frontends seal their tokens with it (PostgreSQL has no key file in the data directory)
        "CHAINLOOM_SECRETS_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    with fake_llm() as fake_url:
        async with serving(database_url, CHAINLOOM_TELEGRAM_BOTS="false", **env) as base:
            async with aiohttp.ClientSession() as session:
                meter = await set_up(session, base, fake_url)
                await chat_figures(session, base, fake_url, meter, args)
        async with TimedTelegram() as telegram:
            telegram.add_bot(TOKEN)
            bots = {"CHAINLOOM_TELEGRAM_API_BASE": telegram.url, "CHAINLOOM_TELEGRAM_POLL_INTERVAL": str(args.poll_interval)}
            async with serving(database_url, **bots, **env) as base:
                async with aiohttp.ClientSession() as session:
                    meter = await set_up(session, base, fake_url)
                    await telegram_figures(session, base, meter, telegram, args)


async def set_up(session, base: str, fake_url: str) -> CpuMeter:
    await serve_models(session, base, fake_url)
    group = os.getpgid((await call(session, "GET", base + "/ready"))["pid"])  # the service's own session
    return CpuMeter(session, group, fake_url)


async def idle_cpu(meter: CpuMeter, seconds: float = 2.0) -> float:
    """chainloom's CPU ms per second while nothing is asked of it."""
    before, started = (await meter.read())[0], time.perf_counter()
    await asyncio.sleep(seconds)
    return ((await meter.read())[0] - before) / (time.perf_counter() - started) * 1000


async def chat_figures(session, base: str, fake_url: str, meter: CpuMeter, args: argparse.Namespace) -> None:
    c, per_chat = args.connections, args.turns_per_chat
    chat_message, echo_message = "turn {i} from {w}: what is new?", "/echo turn {i} from {w}"

    # warm-up: connections, caches, the chain read once
    await turns(session, base, meter, 4, 40, per_chat, echo_message)
    await turns(session, base, meter, 4, 40, per_chat, chat_message)
    probe = await provider_turn(session, base, fake_url, per_chat)
    await replayed(fake_url, probe, 4, 40)
    print(f"{'idle service (no bot runtime)':<38} chainloom CPU {await idle_cpu(meter):.1f} ms/s")

    for connections, total in ((1, args.turns), (c, args.turns * 2)):
        conn = f"{connections} conn"
        echo = await turns(session, base, meter, connections, total, per_chat, echo_message)
        chat = await turns(session, base, meter, connections, total, per_chat, chat_message)
        provider = await replayed(fake_url, probe, connections, total)
        print(_line(f"/echo turn, {conn}", *echo))
        print(_line(f"chat turn, {conn}", *chat))
        print(_line(f"  fake's 3 calls replayed, {conn}", provider))
        timings, cpu, _ = chat
        print(
            f"{'  chainloom adds':<38} p50 {timings.percentile(50) - provider.percentile(50):+7.2f} ms   "
            f"p99 {timings.percentile(99) - provider.percentile(99):+7.2f} ms   chainloom CPU {cpu:.2f} ms/turn"
        )
    print(f"   ({per_chat} turns per chat; the replayed one is turn {max(1, per_chat // 2) + 1} of its chat: "
          + ", ".join(f"{r['path']} {len(str(r['body']))} B" for r in probe) + ")")

    first, last = await history_growth(session, base, args.long_chat)
    print(_line("/echo, turns 1-10 of one chat", first))
    print(_line(f"/echo, turns {args.long_chat - 9}-{args.long_chat} of that chat", last))


async def telegram_figures(session, base: str, meter: CpuMeter, telegram: TimedTelegram, args: argparse.Namespace) -> None:
    """A frontend on the fake Bot API; the first answer warms the chain and a user's chat up."""
    frontend = await call(session, "POST", base + "/telegram-frontends", {"botToken": TOKEN, "description": "bench"})

    async def active() -> bool:
        return (await call(session, "GET", f"{base}/telegram-frontends/{frontend['id']}"))["status"] == "active"

    await eventually("the frontend polled", active)
    await telegram_messages(telegram, [(1, "warm-up")], meter)
    print(f"{'idle service, one frontend polled':<38} chainloom CPU {await idle_cpu(meter):.1f} ms/s   "
          f"(polled every {args.poll_interval:g} s)")
    users = [100 + u for u in range(args.users)]
    burst = [(users[i % len(users)], f"message {i} to the bot: what is new?") for i in range(args.messages)]
    label = f"telegram burst, {args.messages} msgs/{args.users} users"
    print(_line(label, *await telegram_messages(telegram, burst, meter), unit="msg"))
    paced, cpu = Timings(), 0.0
    for i in range(args.paced):
        one, one_cpu = await telegram_messages(telegram, [(99, f"paced message {i}")], meter)
        paced.latencies += one.latencies
        paced.elapsed += one.elapsed
        cpu += one_cpu / args.paced
    print(_line("telegram, one message at a time", paced, cpu, unit="msg"))
    sample = next(text for _, chat, text in reversed(telegram.replied) if chat == 99)
    print(f"   (a reply: {sample!r})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=120, help="turns at 1 connection (twice that at --connections)")
    parser.add_argument("--connections", type=int, default=12)
    parser.add_argument("--turns-per-chat", type=int, default=10)
    parser.add_argument("--long-chat", type=int, default=100, help="turns of the one chat of the history figures")
    parser.add_argument("--messages", type=int, default=200, help="Telegram messages of the burst")
    parser.add_argument("--users", type=int, default=20, help="Telegram users of the burst")
    parser.add_argument("--paced", type=int, default=20, help="Telegram messages one at a time")
    parser.add_argument("--poll-interval", type=float, default=0.05, help="CHAINLOOM_TELEGRAM_POLL_INTERVAL")
    parser.add_argument("--workers", type=int, default=1, help="chainloom serve's worker processes")
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL (also run there)")
    args = parser.parse_args()
    stores = [("SQLite", "")] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} cores)")
    for label, url in stores:
        print(f"== {label}: chainloom serve, {args.workers} worker(s); fake Ollama in its own process, fake Bot API "
              "and the driver in this one")
        started = time.perf_counter()
        asyncio.run(run(url, args))
        print(f"   ({time.perf_counter() - started:.0f} s; load average now "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
