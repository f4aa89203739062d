"""Routes of the Telegram frontends: ``/telegram-frontends`` (create, list), ``/telegram-frontends/{id}`` (get,
update, delete), ``/telegram-frontends/users/{userId}`` (a user's).

Shapes and messages are the platform notes' (§11). A frontend's bot token is
kept sealed (``commands.telegram``) and every read shows it as ``***-***``;
the answers of ``POST`` and ``PUT`` echo the token the caller just sent, as the
reference does. A token must be unique across frontends (409). ``PUT``
replaces the configuration whole (omitted fields reset; ``chatChain`` to
``chat_chain``); the runtime's ``status``, ``lastHeartbeat`` and
``lastError`` are the bot runtime's (``projections.telegram_bots``) and a
client's values for them are ignored. Neither route keeps an
``Idempotency-Key`` (their bodies carry a token).
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import JsonDict

from chainloom.domain.telegram import DEFAULT_CHAIN, MASK, MAX_OFFSET, MAX_TOKEN_LENGTH, FrontendSpec
from chainloom.web.authz import IDENTITY
from chainloom.web.bodies import JsonInt, json_response, with_body
from chainloom.web.idempotency import unkeyed
from chainloom.web.keys import TELEGRAM_COMMANDS, TELEGRAM_QUERIES
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, responds
from chainloom.web.schemas import Message

routes = web.RouteTableDef()

_TOKEN_SCHEMA: JsonDict = {"minLength": 1, "maxLength": MAX_TOKEN_LENGTH, "pattern": "^[!-~]+$"}
_OFFSET_SCHEMA: JsonDict = {"minimum": -MAX_OFFSET, "maximum": MAX_OFFSET}

# -- bodies (unknown fields are ignored; field names match in any case) -------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class CreateFrontendBody(_Body):
    """What ``POST /telegram-frontends`` takes; the owner is the caller."""

    model_config = ConfigDict(json_schema_extra={"required": ["botToken"]})

    description: str = ""
    bot_token: str = Field(
        "", alias="botToken", description="The bot's token: kept sealed, shown `***-***`.", json_schema_extra=_TOKEN_SCHEMA
    )
    chat_chain: str = Field("", alias="chatChain", description=f"The chain answering messages (`{DEFAULT_CHAIN}` if empty).")
    last_offset: JsonInt = Field(0, alias="lastOffset", description="The update id polling starts from.", json_schema_extra=_OFFSET_SCHEMA)
    sync_interval: JsonInt = Field(0, alias="syncInterval", ge=0, le=MAX_OFFSET, description="Kept, not used.")


class UpdateFrontendBody(CreateFrontendBody):
    """The whole entity (``PUT``): omitted fields reset; ``id`` (the path's wins), ``status``, ``lastHeartbeat``,
    ``lastError`` and the times are ignored."""

    model_config = ConfigDict(json_schema_extra={"required": ["botToken", "userId"]})

    user_id: str = Field("", alias="userId", description="The owner's subject.", json_schema_extra={"minLength": 1})


# -- answers -------------------------------------------------------------------------------------------------


class TelegramFrontend(BaseModel):
    """``queries.telegram.frontend_json`` (platform notes §11)."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    user_id: str = Field(alias="userId")
    chat_chain: str = Field(alias="chatChain")
    description: str
    bot_token: str = Field(alias="botToken", description=f"`{MASK}` on every read (`POST` and `PUT` echo the token sent).")
    sync_interval: int = Field(alias="syncInterval")
    status: str = Field(description='"" until polled, `active` while polling works, `error` after a failed poll.')
    last_offset: int = Field(alias="lastOffset", description="The update id the next poll starts from.")
    last_heartbeat: datetime | None = Field(alias="lastHeartbeat", description="When a poll last reached Telegram.")
    last_error: str = Field(alias="lastError", description="The last error of polling or of answering a message.")
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")


# -- helpers -------------------------------------------------------------------------------------------------


def _caller(request: web.Request) -> str:
    """The calling user's subject (the API key's caller, or anyone with security off: the context's actor)."""
    claims = request.get(IDENTITY)
    return claims.subject if claims is not None else command_context(request).actor


def _spec(body: CreateFrontendBody, user_id: str) -> FrontendSpec:
    return FrontendSpec(
        user_id=user_id,
        bot_token=body.bot_token,
        chat_chain=body.chat_chain or DEFAULT_CHAIN,
        description=body.description,
        sync_interval=body.sync_interval,
        last_offset=body.last_offset,
    )


# -- routes --------------------------------------------------------------------------------------------------


@routes.post("/telegram-frontends")
@responds(201, TelegramFrontend)
@fails(409)
@unkeyed
@with_body(CreateFrontendBody)
async def create_telegram_frontend(request: web.Request, body: CreateFrontendBody) -> web.Response:
    """Creates a Telegram frontend owned by the caller; its bot is polled from then on.

    No `botToken`: 422 `invalid Telegram frontend data: bot token is required`; a token another frontend has: 409."""
    frontend_id = await request.app[TELEGRAM_COMMANDS].create(_spec(body, _caller(request)), command_context(request))
    frontend = await request.app[TELEGRAM_QUERIES].frontend(frontend_id)
    return json_response({**frontend, "botToken": body.bot_token}, 201)


@routes.get("/telegram-frontends")
@responds(200, list[TelegramFrontend])
async def list_telegram_frontends(request: web.Request) -> web.Response:
    """Lists every Telegram frontend, newest first, tokens masked."""
    return json_response(await request.app[TELEGRAM_QUERIES].frontends())


@routes.get("/telegram-frontends/users/{userId}")
@responds(200, list[TelegramFrontend])
async def list_user_telegram_frontends(request: web.Request) -> web.Response:
    """Lists a user's Telegram frontends, newest first, tokens masked (none: an empty list)."""
    return json_response(await request.app[TELEGRAM_QUERIES].frontends_of(request.match_info["userId"]))


@routes.get("/telegram-frontends/{id}")
@responds(200, TelegramFrontend)
@fails(404)
async def get_telegram_frontend(request: web.Request) -> web.Response:
    """Retrieves a Telegram frontend, its token masked."""
    return json_response(await request.app[TELEGRAM_QUERIES].frontend(request.match_info["id"]))


@routes.put("/telegram-frontends/{id}")
@responds(200, TelegramFrontend)
@fails(404, 409)
@unkeyed
@with_body(UpdateFrontendBody)
async def update_telegram_frontend(request: web.Request, body: UpdateFrontendBody) -> web.Response:
    """Replaces a Telegram frontend's configuration (the path's id wins; omitted fields reset).

    `botToken` and `userId` are required (422); unknown id: 404; a token another frontend has: 409."""
    frontend_id = request.match_info["id"]
    await request.app[TELEGRAM_COMMANDS].update(frontend_id, _spec(body, body.user_id), command_context(request))
    frontend = await request.app[TELEGRAM_QUERIES].frontend(frontend_id)
    return json_response({**frontend, "botToken": body.bot_token})


@routes.delete("/telegram-frontends/{id}")
@responds(200, Message)
@fails(404)
async def delete_telegram_frontend(request: web.Request) -> web.Response:
    """Deletes a Telegram frontend: its bot is polled no more."""
    await request.app[TELEGRAM_COMMANDS].delete(request.match_info["id"], command_context(request))
    return json_response("Telegram frontend deleted")
