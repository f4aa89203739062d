"""What the adapters share: JSON codec, timeouts, the one request path and its failure mapping.

Every failure leaves an adapter as a ``base.ProviderError`` whose message names the provider type and base
URL (without any user info), says what went wrong, and never carries the API key: upstream texts are
scrubbed of it, and no header is ever quoted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, NoReturn

import aiohttp
import orjson
from yarl import URL

from chainloom.domain.runtime import PulledModel
from chainloom.infra.providers.base import (
    Endpoint,
    ProviderError,
    ProviderRefused,
    ProviderUnavailable,
    PullProgress,
    Unsupported,
)

log = logging.getLogger("chainloom.providers")


# orjson: a third of an adapter's CPU per call less than the standard library's json.
dumps, loads = orjson.dumps, orjson.loads

# Statuses after which another backend may well serve the request: fail over, as for a 5xx.
_RETRYABLE_4XX = frozenset({408, 429})


@dataclass(frozen=True)
class Timeouts:
    """The aiohttp timeouts of the three kinds of call, built once per process."""

    inference: aiohttp.ClientTimeout  # an answer in one piece: the whole call
    stream: aiohttp.ClientTimeout  # streamed answers and pulls: the wait for each next piece
    listing: aiohttp.ClientTimeout  # model lists, deletes

    @classmethod
    def of(cls, connect: float, inference: float, listing: float) -> Timeouts:
        return cls(
            inference=aiohttp.ClientTimeout(total=inference, sock_connect=connect),
            stream=aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=inference),
            listing=aiohttp.ClientTimeout(total=listing, sock_connect=connect),
        )


def safe_url(url: str) -> str:
    """The URL as shown in messages: no user info, no query (where a key could hide)."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return "<invalid URL>"
    if parsed.user or parsed.password or parsed.query_string:
        parsed = parsed.with_user(None).with_query(None)
    return str(parsed).rstrip("/")


class HttpAdapter:
    """Base of the adapters: one endpoint, the shared session, the request path and the error mapping."""

    def __init__(self, endpoint: Endpoint, session: aiohttp.ClientSession, timeouts: Timeouts) -> None:
        self.endpoint = endpoint
        self._session = session
        self._timeouts = timeouts
        self._label = f"{endpoint.type} {safe_url(endpoint.base_url)}"
        self._secret = endpoint.api_key
        self._headers: dict[str, str] = {"Content-Type": "application/json"}

    # -- errors
    def _scrub(self, text: str) -> str:
        if self._secret and self._secret in text:
            text = text.replace(self._secret, "***")
        return text

    def _error(self, kind: type[ProviderError], detail: str) -> ProviderError:
        message = self._scrub(f"{self._label}: {detail}")
        log.debug("provider call failed: %s", message)
        return kind(message)

    def _fail(self, kind: type[ProviderError], detail: str) -> NoReturn:
        raise self._error(kind, detail)

    def unsupported(self, operation: str) -> NoReturn:
        raise Unsupported(f"{self.endpoint.type} backends do not support {operation}")

    def _status_error(self, response: aiohttp.ClientResponse, raw: bytes) -> ProviderError:
        status = response.status
        if status < 400:  # redirects are not followed: the key must not travel to wherever they point
            where = safe_url(response.headers.get("Location", ""))
            return self._error(ProviderRefused, f"redirects to {where} ({status}); set the backend's URL to it")
        kind = ProviderUnavailable if status >= 500 or status in _RETRYABLE_4XX else ProviderRefused
        return self._error(kind, f"{upstream_detail(raw)} ({status})")

    def _transport_error(self, exc: BaseException, timeout: aiohttp.ClientTimeout) -> ProviderError:
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            detail = f"no connection within {timeout.sock_connect:g} s"
        elif isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
            limit = timeout.total or timeout.sock_read or 0
            detail = f"no answer within {limit:g} s"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            detail = f"cannot connect ({exc.os_error.strerror or exc.os_error})"
        elif isinstance(exc, aiohttp.InvalidURL):
            detail = "invalid URL"
        else:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return self._error(ProviderUnavailable, detail)

    def _decode(self, raw: bytes) -> Any:
        try:
            return loads(raw)
        except ValueError:
            self._fail(ProviderUnavailable, f"answered with invalid JSON: {raw[:200]!r}")

    # -- calls
    async def _call(
        self, method: str, url: str, body: Any, timeout: aiohttp.ClientTimeout
    ) -> Any:
        """One JSON call: the decoded answer, or a ProviderError."""
        try:
            async with self._session.request(
                method,
                url,
                data=None if body is None else dumps(body),
                headers=self._headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                if response.status >= 300:
                    raise self._status_error(response, raw)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._transport_error(exc, timeout) from None
        return self._decode(raw) if raw else None

    async def _lines(self, url: str, body: Any, headers: dict[str, str] | None = None) -> AsyncGenerator[bytes, None]:
        """The non-empty lines of a streamed answer (NDJSON, SSE), as they arrive."""
        timeout = self._timeouts.stream
        try:
            async with self._session.post(
                url, data=dumps(body), headers=headers or self._headers, timeout=timeout, allow_redirects=False
            ) as response:
                if response.status >= 300:
                    raise self._status_error(response, await response.read())
                pending = b""
                async for chunk in response.content.iter_any():
                    if b"\n" not in chunk:
                        pending += chunk
                        continue
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield line
                if pending.strip():
                    yield pending
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._transport_error(exc, timeout) from None

    async def _sse(self, url: str, body: Any, headers: dict[str, str] | None = None) -> AsyncGenerator[Any, None]:
        """The decoded ``data:`` payloads of a server-sent event stream (``[DONE]`` ends it)."""
        async with aclosing(self._lines(url, body, headers)) as lines:
            async for line in lines:
                if line.startswith(b"data:"):
                    # One JSON document per data line is what every provider sends (comments, event names
                    # and ids are skipped).
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        async for _ in lines:  # read to the body's end, so the connection is kept
                            pass
                        return
                    yield self._decode(payload)

    # -- what only Ollama does
    async def embed(self, model: str, text: str) -> list[float]:
        self.unsupported("embeddings")

    def pull(self, model: str) -> AsyncIterator[PullProgress]:
        self.unsupported("model pulls")

    async def delete(self, model: str) -> None:
        self.unsupported("model deletion")

    async def list_models(self) -> list[PulledModel]:  # pragma: no cover - every adapter has its own
        raise NotImplementedError


def upstream_detail(raw: bytes) -> str:
    """The error an upstream sent, as one short line: Ollama ``{"error": text}``, OpenAI ``{"error":
    {message, type, code}}``, Gemini ``{"error": {code, message, status}}``, else the body's text."""
    try:
        body = loads(raw)
    except ValueError:
        body = None
    text = ""
    if isinstance(body, dict) and "error" in body:
        error = body["error"]
        if isinstance(error, dict):
            text = str(error.get("message") or "")
            # (Gemini's numeric code repeats the HTTP status, which the message gives anyway)
            kinds = [str(error[k]) for k in ("type", "code", "status") if isinstance(error.get(k), str) and error[k]]
            kinds = [k for k in kinds if k != text]
            if kinds:
                text = f"{text} [{'/'.join(kinds)}]" if text else "/".join(kinds)
        else:
            text = str(error)
    elif raw:
        text = raw.decode("utf-8", "replace").strip()
    text = " ".join(text.split())
    if len(text) > 300:
        text = text[:297] + "..."
    return text or "no error text"
