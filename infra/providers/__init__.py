"""Clients of the upstream LLM servers (Ollama, OpenAI and OpenAI-compatible, vLLM, Gemini): one adapter per
provider type behind one interface (``base.ProviderClient``).

    clients = open_clients(settings)        # once per process
    reply = await clients.client(Endpoint("ollama", "http://ollama:11434")).chat(model, messages)
    await clients.close()                   # at shutdown

All adapters share one aiohttp session (keep-alive connections, sized for many concurrent calls); an
adapter is made once per endpoint (type, base URL, key) and reused.
"""

from __future__ import annotations

import urllib.request

import aiohttp

from chainloom.infra.providers._http import Timeouts, safe_url
from chainloom.infra.providers.base import Endpoint, ProviderClient, Unsupported
from chainloom.infra.providers.gemini import GeminiClient
from chainloom.infra.providers.ollama import OllamaClient
from chainloom.infra.providers.openai import OpenAIClient
from chainloom.infra.settings import Settings

__all__ = ["Clients", "open_clients", "safe_url"]

# Connections the shared session keeps open at once, across every backend.
_CONNECTIONS = 1024
# Seconds an idle connection is kept for reuse: under the 5 s after which uvicorn (vLLM) closes its side,
# so a request is not sent on a connection the server is closing.
_KEEPALIVE = 4.0
# Adapters kept; beyond it (keys rotated many times, backends come and gone) the cache starts over.
_MAX_CACHED = 4096


class Clients:
    """The process's provider clients: ``client(endpoint)`` for each backend, ``close()`` at the end."""

    def __init__(self, settings: Settings) -> None:
        self._timeouts = Timeouts.of(
            connect=settings.provider_connect_timeout,
            inference=settings.provider_timeout,
            listing=settings.provider_list_timeout,
        )
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[Endpoint, ProviderClient] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        # Made at the first call, inside the running loop; proxies from the environment only when set (the
        # lookup costs on every request).
        connector = aiohttp.TCPConnector(
            limit=_CONNECTIONS, limit_per_host=0, keepalive_timeout=_KEEPALIVE, ttl_dns_cache=60
        )
        self._session = aiohttp.ClientSession(
            connector=connector, trust_env=bool(urllib.request.getproxies()), timeout=self._timeouts.inference
        )
        return self._session

    def client(self, endpoint: Endpoint) -> ProviderClient:
        """The adapter of ``endpoint`` (made at the first call; ``Unsupported`` for an unknown type)."""
        try:
            return self._clients[endpoint]
        except KeyError:
            pass
        session = self._session or self._open_session()
        kind = endpoint.type.lower()
        adapter: ProviderClient
        if kind == "ollama":
            adapter = OllamaClient(endpoint, session, self._timeouts)
        elif kind == "openai":
            adapter = OpenAIClient(endpoint, session, self._timeouts)
        elif kind == "vllm":
            adapter = OpenAIClient(endpoint, session, self._timeouts, vllm=True)
        elif kind == "gemini":
            adapter = GeminiClient(endpoint, session, self._timeouts)
        else:
            raise Unsupported(f"unsupported backend type: {endpoint.type}")
        if len(self._clients) >= _MAX_CACHED:
            self._clients.clear()
        self._clients[endpoint] = adapter
        return adapter

    async def close(self) -> None:
        self._clients.clear()
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def open_clients(settings: Settings) -> Clients:
    """The provider clients of this process (no connection is opened until the first call)."""
    return Clients(settings)
