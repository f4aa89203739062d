"""CPU per upstream chat call: our adapters (infra/providers) and, for comparison, the providers' SDKs.

    .venv/bin/python bench/bench_provider_clients.py [-n 3000] [--sdk-python /path/to/python]

The fake providers (tests/fakes/llm.py) run as their own processes, so only the client's work counts:
``time.process_time`` over N sequential calls (after a warm-up), on uvloop as the service runs. The SDKs
(`openai`, `ollama`) are not project dependencies: they are measured when this interpreter can import
them, or with ``--sdk-python`` naming an interpreter that can (it needs nothing of chainloom); otherwise
the line says "not installed".
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"ollama": "phi3:3.8b", "openai": "gpt-4o-mini"}
KEY = "sk-test"


@contextmanager
def fake(kind: str) -> Iterator[str]:
    """A fake provider in its own process; yields its base URL (OpenAI's ends in /v1)."""
    from bench.harness import url_process  # (the project's root is on the path by then: main)

    with url_process([sys.executable, "-m", "tests.fakes.llm", kind] + ([KEY] if kind == "openai" else [])) as url:
        yield url


def run(main: Callable[[], Awaitable[float]]) -> float:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


async def cpu_per_call(call: Callable[[], Awaitable[object]], n: int) -> float:
    """Milliseconds of this process's CPU per call, over n sequential calls after a warm-up."""
    for _ in range(max(50, n // 10)):
        await call()
    started = time.process_time()
    for _ in range(n):
        await call()
    return (time.process_time() - started) / n * 1000


def ours(kind: str, url: str, n: int, stream: bool = False) -> float:
    from chainloom.infra.providers import open_clients
    from chainloom.infra.providers.base import Endpoint, Message
    from chainloom.infra.settings import Settings

    async def main() -> float:
        clients = open_clients(Settings())
        client = clients.client(Endpoint(kind, url, api_key=KEY if kind == "openai" else ""))
        messages = [Message("user", "hi there")]
        model = MODELS[kind]

        async def streamed() -> None:
            async for _ in client.chat_stream(model, messages):
                pass

        try:
            return await cpu_per_call(streamed if stream else (lambda: client.chat(model, messages)), n)
        finally:
            await clients.close()

    return run(main)


def floor(kind: str, url: str, n: int) -> float:
    """A bare aiohttp POST of the same body and a JSON decode of the answer: what any adapter costs at least."""
    import json

    import aiohttp

    path = "/chat/completions" if kind == "openai" else "/api/chat"
    body = {"model": MODELS[kind], "messages": [{"role": "user", "content": "hi there"}]}
    if kind == "ollama":
        body["stream"] = False
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}

    async def main() -> float:
        async with aiohttp.ClientSession() as session:

            async def call() -> object:
                async with session.post(url + path, data=json.dumps(body).encode(), headers=headers) as response:
                    return json.loads(await response.read())

            return await cpu_per_call(call, n)

    return run(main)


def sdk(kind: str, url: str, n: int) -> float:
    """The provider's own SDK, async client (raises ImportError when not installed)."""
    model = MODELS[kind]
    messages = [{"role": "user", "content": "hi there"}]
    if kind == "openai":
        import openai

        async def main() -> float:
            client = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0)
            try:
                return await cpu_per_call(lambda: client.chat.completions.create(model=model, messages=messages), n)
            finally:
                await client.close()
    else:
        import ollama

        async def main() -> float:
            client = ollama.AsyncClient(host=url)
            return await cpu_per_call(lambda: client.chat(model=model, messages=messages), n)

    return run(main)


def sdk_line(kind: str, url: str, n: int, sdk_python: str) -> str:
    try:
        return f"{sdk(kind, url, n):6.3f} ms"
    except ImportError:
        pass
    if sdk_python:
        child = subprocess.run(
            [sdk_python, __file__, "--sdk-child", kind, "--url", url, "-n", str(n)],
            capture_output=True, text=True,
        )
        if child.returncode == 0:
            return f"{float(child.stdout.strip()):6.3f} ms   (with {sdk_python})"
        if "ImportError" not in child.stderr and "ModuleNotFoundError" not in child.stderr:
            raise RuntimeError(child.stderr[-2000:])
    return "not installed"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=3000, help="calls measured per client")
    parser.add_argument("--sdk-python", default="", help="an interpreter with the openai and ollama SDKs")
    parser.add_argument("--sdk-child", choices=sorted(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--postgres", help=argparse.SUPPRESS)  # bench/run passes it; no store is involved
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sdk_child:  # run by sdk_line in another interpreter: print the figure only
        print(sdk(args.sdk_child, args.url, args.n))
        return

    sys.path.insert(0, str(ROOT))
    print(f"== CPU per chat call (client side, sequential, n={args.n}; fake provider in its own process)")
    for kind, label in (("openai", "OpenAI"), ("ollama", "Ollama")):
        with fake(kind) as url:
            print(f"{'bare aiohttp POST (the floor)':<38} {floor(kind, url, args.n):6.3f} ms")
            print(f"{label + ' adapter, chat':<38} {ours(kind, url, args.n):6.3f} ms")
            print(f"{label + ' adapter, chat streamed':<38} {ours(kind, url, args.n, stream=True):6.3f} ms")
            print(f"{kind + ' SDK, chat':<38} {sdk_line(kind, url, args.n, args.sdk_python)}")


if __name__ == "__main__":
    main()
