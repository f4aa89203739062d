"""Queries of the cloud providers' configurations, and their API keys for the runtime.

Answers show a key masked (its hint, ``domain.providers.mask_key``) unless the
operator allowed revealing (``CHAINLOOM_PROVIDER_KEYS_REVEALABLE``) and the
request asks (``?reveal=true``). ``ProviderKeys`` opens the sealed key for the
code that calls the provider (the reconciler, routing); it is never answered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from chainloom.domain.backends import PROVIDER_TYPES
from chainloom.domain.errors import Forbidden, NotFound, Unprocessable
from chainloom.domain.providers import check_provider_type
from chainloom.infra.readstore import ReadStore, Row
from chainloom.infra.secrets import SecretBox, SecretsUnavailable
from chainloom.infra.timefmt import format_ns
from chainloom.queries.cache import ReadCache
from chainloom.queries.pagination import Page

logger = logging.getLogger(__name__)

Json = dict[str, Any]
RunBlocking = Callable[..., Awaitable[Any]]

ZERO_TIME = "0001-01-01T00:00:00Z"
_COLUMNS = "type, sealed_key, key_hint, created_at, updated_at"


class _Rows:
    """Rows of ``provider_configs``, remembered until the read models move (``ReadCache``)."""

    def __init__(self, store: ReadStore, run_blocking: RunBlocking, cache: ReadCache | None) -> None:
        self._store = store
        self._run_blocking = run_blocking
        self._cache = cache or ReadCache(None)

    async def rows(self, sql: str, *params: Any) -> list[Row]:
        async def load() -> list[Row]:
            return [dict(row) for row in await self._run_blocking(self._store.query, sql, params)]

        return await self._cache.get(("provider_configs", sql, params), load)

    async def one(self, provider_type: str) -> Row | None:
        rows = await self.rows(f"SELECT {_COLUMNS} FROM provider_configs WHERE type = ?", provider_type)
        return rows[0] if rows else None


class _Opener:
    """Opens sealed keys with the process's box (remembering the last opening of each)."""

    def __init__(self, secrets: SecretBox | None) -> None:
        self._secrets = secrets
        self._opened: dict[str, str] = {}

    def open(self, sealed: str) -> str:
        key = self._opened.get(sealed)
        if key is None:
            if self._secrets is None:
                raise SecretsUnavailable("no secrets key is configured (CHAINLOOM_SECRETS_KEY)")
            key = self._secrets.open(sealed)
            if len(self._opened) > 64:
                self._opened.clear()
            self._opened[sealed] = key
        return key


class ProviderKeys:
    """The API key of a configured provider, in clear, for calling it — never for an answer.

    ``ProviderKeys(store, run_blocking, secrets, cache=None)``: the read store, the process's pool
    (``BlockingPool.run``), its ``SecretBox`` (``resources.secrets``; None: no key can be opened) and,
    optionally, the ``ReadCache`` the other queries use (a key is then read from the store only when
    the read models have moved)."""

    def __init__(
        self, store: ReadStore, run_blocking: RunBlocking, secrets: SecretBox | None, cache: ReadCache | None = None
    ) -> None:
        self._rows = _Rows(store, run_blocking, cache)
        self._opener = _Opener(secrets)

    async def api_key(self, provider_type: str) -> str | None:
        """The key of ``provider_type`` (``openai``, ``gemini``); None when it is not configured (or its
        sealed key cannot be opened with this process's secrets key: logged, without the key)."""
        if provider_type not in PROVIDER_TYPES:
            return None
        row = await self._rows.one(provider_type)
        if row is None:
            return None
        try:
            return self._opener.open(row["sealed_key"])
        except SecretsUnavailable as error:
            logger.warning("the API key of provider %s cannot be opened (%s); configure it again", provider_type, error)
            return None


class ProviderQueries:
    def __init__(
        self,
        store: ReadStore,
        run_blocking: RunBlocking,
        cache: ReadCache | None,
        secrets: SecretBox | None,
        revealable: bool,
    ) -> None:
        self._rows = _Rows(store, run_blocking, cache)
        self._opener = _Opener(secrets)
        self._revealable = revealable

    def check_reveal(self, reveal: bool) -> None:
        if reveal and not self._revealable:
            raise Forbidden(
                "revealing provider API keys is disabled: the operator enables it with"
                " CHAINLOOM_PROVIDER_KEYS_REVEALABLE=true"
            )

    async def status(self, provider_type: str) -> Json:
        """``{"configured", "updatedAt", "provider"}``: ``updatedAt`` is when it was last configured (the
        zero time when it is not)."""
        row = await self._rows.one(provider_type)
        return {
            "configured": row is not None,
            "updatedAt": format_ns(row["updated_at"]) if row is not None else ZERO_TIME,
            "provider": provider_type,
        }

    async def config(self, provider_type: str, reveal: bool = False) -> Json:
        check_provider_type(provider_type)
        self.check_reveal(reveal)
        row = await self._rows.one(provider_type)
        if row is None:
            raise NotFound("libdb: not found")
        return self._config_json(row, reveal)

    async def configs(self, page: Page, reveal: bool = False) -> list[Json]:
        self.check_reveal(reveal)
        rows = await self._rows.rows(
            f"SELECT {_COLUMNS} FROM provider_configs WHERE created_at < ? ORDER BY created_at DESC, type DESC LIMIT ?",
            page.before_ns,
            page.limit,
        )
        return [self._config_json(row, reveal) for row in rows]

    def _config_json(self, row: Row, reveal: bool) -> Json:
        """The contract's ``runtimestate_ProviderConfig`` (``APIKey``, ``Type``), plus when it was made and
        last configured (for paging: the next page starts before the last ``createdAt``)."""
        if reveal:
            try:
                key = self._opener.open(row["sealed_key"])
            except SecretsUnavailable as error:
                raise Unprocessable(f"the API key of provider {row['type']} cannot be opened ({error}); configure it again") from None
        else:
            key = row["key_hint"]
        return {
            "APIKey": key,
            "Type": row["type"],
            "createdAt": format_ns(row["created_at"]),
            "updatedAt": format_ns(row["updated_at"]),
        }
