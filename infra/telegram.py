"""Telegram: the Bot API client (``getUpdates``, ``sendMessage`` over aiohttp) and how bot tokens are kept.

The Bot API is ``<base>/bot<token>/<method>`` with a JSON body, answering
``{"ok": true, "result": …}`` or ``{"ok": false, "error_code", "description"}``.
The base URL is ``CHAINLOOM_TELEGRAM_API_BASE`` (``https://api.telegram.org``;
tests point it at a local fake). ``getUpdates`` is asked with a short
``timeout`` (no long polling: one poller serves every frontend in turn) and
confirms every update before its ``offset``. A text longer than Telegram's
limit is sent as several messages.

A token is never logged: errors name the method and Telegram's description,
not the URL.

``TokenSealer`` seals tokens for the log (``infra.secrets.SecretBox``) and
digests them with a key derived from the secrets key, so uniqueness can be
checked without the token in clear.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Sequence
from hashlib import sha256
from typing import Any
from urllib.parse import quote

import aiohttp

from chainloom.domain.errors import Unprocessable
from chainloom.domain.telegram import Sealed
from chainloom.infra.secrets import SecretBox, SecretsUnavailable

# Telegram's longest message text, in characters.
MAX_MESSAGE_LENGTH = 4096
# Updates asked for per getUpdates (Telegram's maximum).
UPDATES_PER_CALL = 100
# What the digests of bot tokens are keyed with (derived from the secrets key: the same in every process).
DIGEST_PURPOSE = "telegram-bot-token"


class TelegramError(Exception):
    """The Bot API refused a call, or could not be reached; the message never holds the token."""


class TelegramClient:
    """One session per process (``close`` it); ``timeout``: seconds a call may take in all."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_updates(self, bot_token: str, offset: int, poll_timeout: int = 0) -> list[dict[str, Any]]:
        """The updates from ``offset`` on (those before it are confirmed, and Telegram drops them)."""
        result = await self._call(
            bot_token, "getUpdates", {"offset": offset, "limit": UPDATES_PER_CALL, "timeout": poll_timeout}
        )
        if not isinstance(result, list):
            raise TelegramError("getUpdates: the answer's result is not a list")
        return [update for update in result if isinstance(update, dict) and isinstance(update.get("update_id"), int)]

    async def send_message(self, bot_token: str, chat_id: int, text: str) -> None:
        """Send ``text`` to the chat (in pieces of at most ``MAX_MESSAGE_LENGTH`` characters)."""
        for piece in split_text(text):
            await self._call(bot_token, "sendMessage", {"chat_id": chat_id, "text": piece})

    async def _call(self, bot_token: str, method: str, body: dict[str, Any]) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        url = f"{self._base}/bot{quote(bot_token, safe=':')}/{method}"
        try:
            async with self._session.post(url, json=body) as response:
                try:
                    answer = await response.json(content_type=None)
                except ValueError:
                    answer = None
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise TelegramError(f"{method}: Telegram could not be reached ({type(error).__name__})") from None
        if isinstance(answer, dict) and answer.get("ok") is True:
            return answer.get("result")
        description = answer.get("description") if isinstance(answer, dict) else None
        raise TelegramError(f"{method}: {status} {description or 'no description'}")


def split_text(text: str, limit: int = MAX_MESSAGE_LENGTH) -> Sequence[str]:
    """``text`` in pieces Telegram takes (an empty text is one empty piece, which Telegram refuses)."""
    return [text[start : start + limit] for start in range(0, len(text), limit)] or [text]


class TokenSealer:
    """Seals bot tokens and digests them; without a secrets box no token can be kept (422)."""

    def __init__(self, secrets: SecretBox | None) -> None:
        self._secrets = secrets
        self._digest_key = secrets.derive(DIGEST_PURPOSE) if secrets is not None else b""

    def digest(self, bot_token: str) -> str:
        return hmac.new(self._digest_key, bot_token.encode(), sha256).hexdigest()

    def seal(self, bot_token: str) -> Sealed:
        if self._secrets is None:
            raise Unprocessable(
                "Telegram bot tokens need a key to be sealed with: set CHAINLOOM_SECRETS_KEY", param="botToken"
            )
        return Sealed(self._secrets.seal(bot_token), self.digest(bot_token))

    def open(self, sealed_token: str) -> str:
        """The token in clear (``SecretsUnavailable`` when this process cannot open it)."""
        if self._secrets is None:
            raise SecretsUnavailable("no secrets key is configured (CHAINLOOM_SECRETS_KEY)")
        return self._secrets.open(sealed_token)
