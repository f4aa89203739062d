"""The console over loopback: its first paint, its first view, and how soon a new event shows in the log tail.

    .venv/bin/python bench/bench_console.py [--runs 20]

Runs a real ``chainloom serve`` (SQLite, the default workers) and Debian's headless Chromium
(``/usr/bin/chromium``) through Playwright. For each run a fresh browser context (empty cache, no cookies)
opens ``/console``:

- first paint and first contentful paint, as the browser's Paint Timing API reports them (from the start
  of navigation; the aim is < 300 ms);
- the first view rendered with data from the API (``#/backends``, its table filled), by polling the page;
- a warm reload of the same context (cache revalidated: 304s).

Then, in one open ``#/log`` view, events are posted through the API one at a time, and the time from the
``POST`` being sent until the row is in the page is taken (the tail's latency: SSE from the log).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import aiohttp
from playwright.async_api import Page, async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import service  # noqa: E402
from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

PAINTS = """() => Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]))"""


def line(label: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return f"{label:<44} p50 {statistics.median(values):7.1f} ms   p95 {p95:7.1f} ms   (n={len(values)})"


async def paints(page: Page) -> dict[str, float]:
    for _ in range(100):
        found = await page.evaluate(PAINTS)
        if "first-contentful-paint" in found:
            return found
        await asyncio.sleep(0.01)
    raise RuntimeError("no first contentful paint")


async def first_paint(base: str, runs: int) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        fp, fcp, view, warm_fcp = [], [], [], []
        for run in range(runs + 1):
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            started = time.perf_counter()
            await page.goto(f"{base}/console#/backends", wait_until="commit")
            await page.wait_for_selector("main[data-view='backends'] table, main[data-view='backends'] .empty")
            rendered = (time.perf_counter() - started) * 1000
            found = await paints(page)
            await page.reload()
            warm = await paints(page)
            await context.close()
            if run == 0:
                continue  # the browser's own first start (its caches, the service's first answers)
            fp.append(found["first-paint"])
            fcp.append(found["first-contentful-paint"])
            view.append(rendered)
            warm_fcp.append(warm["first-contentful-paint"])
        await browser.close()
    print(line("first paint (cold context)", fp))
    print(line("first contentful paint (cold context)", fcp))
    print(line("#/backends rendered with its data", view))
    print(line("first contentful paint (warm reload)", warm_fcp))


async def tail_latency(base: str, events: int) -> None:
    async with async_playwright() as playwright, aiohttp.ClientSession(base_url=base) as http:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto(f"{base}/console#/log")
        await page.wait_for_selector("main[data-view='log']")
        await asyncio.sleep(0.5)  # the tail's stream is open
        latencies = []
        for i in range(events):
            aggregate = f"bench-{i}-{time.monotonic_ns()}"
            body = {"event_type": "bench.tail", "event_source": "bench", "aggregate_type": "bench",
                    "aggregate_id": aggregate, "version": 1, "data": {"i": i}}  # fmt: skip
            started = time.perf_counter()
            async with http.post("/events", json=body) as answer:
                assert answer.status == 201, await answer.text()
            await page.wait_for_function(f"document.querySelector('main').textContent.includes('{aggregate}')")
            latencies.append((time.perf_counter() - started) * 1000)
        await browser.close()
    print(line("event posted → shown in the log tail", latencies))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--events", type=int, default=20)
    args = parser.parse_args()
    with service() as base:
        async with aiohttp.ClientSession() as http:
            for i in range(5):  # something in the first view's table
                backend = {"name": f"ollama-{i}", "baseUrl": f"http://127.0.0.1:9/{i}", "type": "ollama"}
                async with http.post(f"{base}/backends", json=backend) as answer:
                    assert answer.status == 201, await answer.text()
        print(f"chainloom console over loopback ({base}), Chromium {CHROMIUM}")
        await first_paint(base, args.runs)
        if args.events:
            await tail_latency(base, args.events)


if __name__ == "__main__":
    asyncio.run(main())
