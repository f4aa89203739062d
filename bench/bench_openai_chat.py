"""What chainloom adds to an OpenAI chat completion: ``POST /openai/{chain}/v1/chat/completions`` against a fake
Ollama versus calling the fake's ``/api/chat`` directly, plain and streamed.

    .venv/bin/python bench/bench_openai_chat.py              # SQLite
    bench/run bench/bench_openai_chat.py                     # also on a durable throwaway PostgreSQL

A deterministic fake Ollama (tests/fakes/llm.py, answering at once; its reply streamed as one piece) runs as
its own process. wrk drives, over loopback, first the fake's ``POST /api/chat`` directly (the body chainloom
sends it: the chain's system instruction and the user message), then chainloom's chat endpoint (one worker
process: ``chainloom serve --workers 1``) on a stored chain of two tasks — ``model_execution`` on the default
chat model, then ``convert_to_openai_chat_response`` — whose model is on that fake through a backend of the
internal chat group the reconciler has observed. Each chain run is recorded on the log (``task_run``
events: started, then the steps with finished), so the store is on this path. Plain (``stream: false`` /
a chat completion) and streamed (``stream: true``: NDJSON from the fake, Server-Sent Events from
chainloom, read to their end; the model is declared ``canStream``), each at 1 connection (the latency
chainloom adds: the p50/p99 differences) and at 16 (throughput). chainloom's CPU per request is the user +
system time of its processes over a run divided by the requests answered.

The figures are the machine's: fake, chainloom and wrk share its cores. Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_execute import _json, fake_ollama, measured  # noqa: E402
from bench.harness import service, wrk  # noqa: E402

MODEL = "phi3:3.8b"  # the fake Ollama holds it, and it is the default chat model
SYSTEM = "You are a concise assistant."
QUESTION = "What is the capital of France? Answer with one word."
CHAIN = {
    "id": "bench-chat",
    "tasks": [
        {"id": "answer", "handler": "model_execution", "system_instruction": SYSTEM,
         "transition": {"branches": [{"operator": "default", "goto": "reply"}]}},
        {"id": "reply", "handler": "convert_to_openai_chat_response",
         "transition": {"branches": [{"operator": "default", "goto": "end"}]}},
    ],
}


def _lua(path: str, body: dict) -> str:
    return """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '%s'
wrk.path = "%s"
""" % (json.dumps(body), path)


def direct(stream: bool) -> str:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION}]
    return _lua("/api/chat", {"model": MODEL, "messages": messages, "stream": stream, "think": False})


def chat(stream: bool) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], "stream": stream}
    return _lua(f"/openai/{CHAIN['id']}/v1/chat/completions", body)


def set_up(base: str, fake_url: str) -> None:
    """The fake in the internal chat group, the model declared to stream, the chain stored; returns once a
    completion is answered."""
    seeded = next(m for m in _json(base, "GET", "/models") if m["model"] == MODEL)  # type: ignore[union-attr]
    _json(base, "PUT", f"/models/{seeded['id']}", {"model": MODEL, "contextLength": 2048, "canChat": True,
                                             "canPrompt": True, "canStream": True})
    backend = _json(base, "POST", "/backends", {"name": "fake-ollama", "baseUrl": fake_url, "type": "ollama"})
    _json(base, "POST", f"/backend-affinity/internal_chat_group/backends/{backend['id']}")
    _json(base, "POST", "/taskchains", CHAIN)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = _json(base, "GET", "/state")
        if any(s["id"] == backend["id"] and any(p["name"] == MODEL and p.get("canStream") for p in s["pulledModels"])
               for s in states):
            body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}]}
            answer = _json(base, "POST", f"/openai/{CHAIN['id']}/v1/chat/completions", body)
            assert answer["choices"][0]["message"]["content"], answer  # type: ignore[index]
            return
        time.sleep(0.2)
    raise RuntimeError("the reconciler never showed the fake backend holding the model")


def run(database_url: str, seconds: float, workers: int) -> None:
    with fake_ollama() as fake_url:
        wrk(fake_url, direct(False), seconds=1, connections=4)  # warm-up
        baseline = {(s, c): measured(fake_url, direct(s), seconds, c)[0] for s in (False, True) for c in (1, 16)}
        with service(database_url, CHAINLOOM_WORKERS=str(workers), CHAINLOOM_RECONCILE_INTERVAL="1") as base:
            set_up(base, fake_url)
            group = os.getpgid(_json(base, "GET", "/ready")["pid"])  # type: ignore[index]
            wrk(base, chat(False), seconds=1, connections=4)  # warm-up
            served = {(s, c): measured(base, chat(s), seconds, c, group) for s in (False, True) for c in (1, 16)}
    for stream in (False, True):
        kind = "streamed" if stream else "plain"
        for c in (1, 16):
            print(baseline[stream, c].line(f"fake /api/chat {kind}, {c} conn"))
            result, cpu = served[stream, c]
            print(result.line(f"chat/completions {kind}, {c} conn"))
            print(
                f"{'  chainloom adds':<38} p50 {result.p50_ms - baseline[stream, c].p50_ms:+7.2f} ms   "
                f"p99 {result.p99_ms - baseline[stream, c].p99_ms:+7.2f} ms   chainloom CPU {cpu:.2f} ms/request"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--workers", type=int, default=1, help="chainloom serve's worker processes")
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL (also run there)")
    args = parser.parse_args()
    stores = [("SQLite", "")] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    for label, url in stores:
        print(f"== {label}: wrk over loopback; chainloom serve, {args.workers} worker(s); fake Ollama in its own process")
        run(url, args.seconds, args.workers)


if __name__ == "__main__":
    main()
