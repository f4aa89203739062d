"""A fake Telegram Bot API for tests: an aiohttp server on 127.0.0.1 (random port) speaking its wire protocol.

    async with FakeTelegram() as telegram:
        telegram.add_bot("123:ABC")
        telegram.user_says("123:ABC", chat_id=7, user_id=42, text="hello")
        ...settings telegram_api_base=telegram.url...
        telegram.sent  # [(token, chat_id, text), …]

``POST|GET <url>/bot<token>/getUpdates`` (``offset``, ``limit``, ``timeout`` in a
JSON body or the query) answers the bot's updates from ``offset`` on and, as
Telegram does, forgets every update before ``offset`` for good (they are
confirmed). ``sendMessage`` (``chat_id``, ``text``) records the message and
answers it. An unknown token is 401 ``Unauthorized``; a chat in
``refused_chats`` is 400 ``Bad Request: chat not found``; ``fail_updates``
(a status) makes every ``getUpdates`` fail. Errors have Telegram's shape
``{"ok": false, "error_code", "description"}``. ``calls`` counts the calls by
method.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from typing import Any

from aiohttp import web


class FakeTelegram:
    def __init__(self) -> None:
        self.url = ""
        self.updates: dict[str, list[dict[str, Any]]] = {}  # token → updates not yet confirmed
        self.sent: list[tuple[str, int, str]] = []
        self.refused_chats: set[int] = set()
        self.fail_updates: int | None = None
        self.calls: Counter[str] = Counter()
        self.offsets: list[tuple[str, int]] = []  # (token, offset) of every getUpdates, in order
        self._update_ids = itertools.count(1000)
        self._message_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.changed = asyncio.Event()  # set whenever a message is sent

    # -- the bots' side

    def add_bot(self, token: str) -> None:
        self.updates.setdefault(token, [])

    def user_says(self, token: str, chat_id: int, user_id: int, text: str, username: str = "") -> int:
        """An update carrying a text message from ``user_id`` in ``chat_id``; its update id."""
        update_id = next(self._update_ids)
        sender = {"id": user_id, "is_bot": False, "first_name": f"User {user_id}"}
        if username:
            sender["username"] = username
        message = {
            "message_id": next(self._message_ids),
            "from": sender,
            "chat": {"id": chat_id, "type": "private"},
            "date": int(time.time()),
            "text": text,
        }
        self.updates[token].append({"update_id": update_id, "message": message})
        return update_id

    def other_update(self, token: str) -> int:
        """An update without a message (an edited one): confirmed, never answered."""
        update_id = next(self._update_ids)
        self.updates[token].append({"update_id": update_id, "edited_message": {"message_id": 1, "text": "x"}})
        return update_id

    def sent_to(self, chat_id: int) -> list[str]:
        return [text for _, chat, text in self.sent if chat == chat_id]

    # -- lifecycle

    async def __aenter__(self) -> FakeTelegram:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._call)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- the Bot API

    async def _call(self, request: web.Request) -> web.Response:
        token, method = request.match_info["token"], request.match_info["method"]
        self.calls[method] += 1
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            params.update(await request.json())
        if token not in self.updates:
            return _error(401, "Unauthorized")
        if method == "getUpdates":
            return self._get_updates(token, params)
        if method == "sendMessage":
            return self._send_message(token, params)
        return _error(404, "Not Found")

    def _get_updates(self, token: str, params: dict[str, Any]) -> web.Response:
        if self.fail_updates is not None:
            return _error(self.fail_updates, "Internal Server Error" if self.fail_updates >= 500 else "Bad Request")
        offset, limit = int(params.get("offset", 0)), int(params.get("limit", 100))
        self.offsets.append((token, offset))
        pending = self.updates[token]
        if offset > 0:  # confirmed: gone for good
            pending[:] = [update for update in pending if update["update_id"] >= offset]
        return web.json_response({"ok": True, "result": pending[:limit]})

    def _send_message(self, token: str, params: dict[str, Any]) -> web.Response:
        chat_id, text = int(params["chat_id"]), str(params.get("text", ""))
        if chat_id in self.refused_chats:
            return _error(400, "Bad Request: chat not found")
        if not text:
            return _error(400, "Bad Request: message text is empty")
        self.sent.append((token, chat_id, text))
        self.changed.set()
        message = {"message_id": next(self._message_ids), "chat": {"id": chat_id, "type": "private"}, "text": text}
        return web.json_response({"ok": True, "result": message})


def _error(status: int, description: str) -> web.Response:
    return web.json_response({"ok": False, "error_code": status, "description": description}, status=status)
