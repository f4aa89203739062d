"""Identity figures: a password hash, sign-in end to end, and what authorization adds to a request.

    .venv/bin/python bench/bench_identity.py               # SQLite only
    bench/run bench/bench_identity.py                      # SQLite and a durable throwaway PostgreSQL

- ``argon2id hash``: one hash at the service's default cost (``infra.passwords``), in this process.
- ``POST /login``: sign-ins one after another against ``chainloom serve`` with security on (the hash, the
  token, the ``user.signed_in`` record).
- ``authorization middleware``: the middleware alone around a handler that does nothing, on an
  authorised ``GET /groups`` resolved by the app's router (bearer token granting ``server`` manage), minus
  the same loop without it; ``Tokens.verify`` the first time a token is seen and once remembered.
- ``GET /groups``: wrk against the service with security on (a bearer token) and off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiohttp import web  # noqa: E402
from aiohttp.test_utils import make_mocked_request  # noqa: E402

from bench.harness import Timings, service, wrk  # noqa: E402
from chainloom.domain.identity import SERVER, Grant, Permission  # noqa: E402
from chainloom.infra.passwords import Passwords  # noqa: E402
from chainloom.infra.settings import Settings  # noqa: E402
from chainloom.infra.tokens import Tokens  # noqa: E402
from chainloom.web.app import create_app  # noqa: E402
from chainloom.web.authz import authorization_middleware  # noqa: E402
from chainloom.web.keys import IDENTITY_QUERIES, TOKENS  # noqa: E402

SECRET = "a-bench-secret-of-32-characters!"
ROUNDS = 200_000


def post(base: str, path: str, body: dict, token: str = "") -> dict:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def hashing(rounds: int = 20) -> None:
    passwords = Passwords()
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        passwords.hash("correct horse battery staple")
        took.append(time.perf_counter() - started)
    timings = Timings(took, sum(took))
    print(f"{'argon2id hash (time 2, 32 MiB)':<38} p50 {timings.percentile(50):7.2f} ms   p99 {timings.percentile(99):7.2f} ms")


def sign_ins(base: str, rounds: int) -> Timings:
    credentials = {"email": "admin@admin.com", "password": "correct horse battery staple"}
    post(base, "/register", credentials)
    timings = Timings()
    started = time.perf_counter()
    for _ in range(rounds):
        sent = time.perf_counter()
        post(base, "/login", credentials)
        timings.latencies.append(time.perf_counter() - sent)
    timings.elapsed = time.perf_counter() - started
    return timings


async def middleware_cost() -> None:
    tokens = Tokens(SECRET.encode(), 3600)
    subject = str(uuid.uuid4())
    now = "2026-01-01T00:00:00Z"
    grants = [Grant(str(uuid.uuid4()), subject, SERVER, "system", Permission.MANAGE, now, now)]
    token, _ = tokens.issue(subject, grants)
    fresh = [tokens.issue(str(uuid.uuid4()), grants)[0] for _ in range(5000)]  # distinct texts: none remembered
    started = time.perf_counter()
    for value in fresh:
        tokens.verify(value)
    first = (time.perf_counter() - started) / len(fresh)
    started = time.perf_counter()
    for _ in range(ROUNDS):
        tokens.verify(token)
    remembered = (time.perf_counter() - started) / ROUNDS

    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(Settings(data_dir=Path(data_dir), security_enabled=True, jwt_secret=SECRET))
    app[TOKENS] = tokens
    app[IDENTITY_QUERIES] = None  # never asked: the token's own entry decides
    request = make_mocked_request("GET", "/groups", headers={"Authorization": f"Bearer {token}"}, app=app)
    match_info = await app.router.resolve(request)
    match_info.add_app(app)
    request._match_info = match_info
    middleware = authorization_middleware("")
    answer = web.Response()

    async def handler(_request: web.Request) -> web.Response:
        return answer

    async def bare(req: web.Request, handle) -> web.StreamResponse:
        return await handle(req)

    async def loop(call) -> float:
        started = time.perf_counter()
        for _ in range(ROUNDS):
            await call(request, handler)
        return (time.perf_counter() - started) / ROUNDS

    added = statistics.median([(await loop(middleware)) - (await loop(bare)) for _ in range(5)])
    print(f"{'Tokens.verify, first time / remembered':<38} {first * 1e3:7.4f} ms / {remembered * 1e3:.4f} ms")
    print(f"{'authorization middleware, GET /groups':<38} {added * 1e3:7.4f} ms per request (median of 5 x {ROUNDS})")


GROUPS = 'request = function() return wrk.format("GET", "/groups") end\n'


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sign-ins", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--postgres", default=os.environ.get("CHAINLOOM_PG_URL", ""), help="PostgreSQL URL (also run there)")
    args = parser.parse_args()
    print(f"== in this process ({os.cpu_count()} cores)")
    hashing()
    asyncio.run(middleware_cost())
    stores = [("SQLite", "")] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
    for label, url in stores:
        print(f"== {label}: chainloom serve")
        with service(url, CHAINLOOM_SECURITY_ENABLED="true", CHAINLOOM_JWT_SECRET=SECRET) as base:
            print(sign_ins(base, args.sign_ins).line("POST /login, one at a time", "sign-in"))
            token = post(base, "/login", {"email": "admin@admin.com", "password": "correct horse battery staple"})["token"]
            bearer = GROUPS.replace('"/groups")', f'"/groups", {{["Authorization"] = "Bearer {token}"}})')
            print(wrk(base, bearer, seconds=args.seconds).line("GET /groups, security on (bearer)"))
        with service(url) as base:
            print(wrk(base, GROUPS, seconds=args.seconds).line("GET /groups, security off"))


if __name__ == "__main__":
    main()
