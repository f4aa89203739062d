"""Routes of the cloud providers (OpenAI, Gemini): /providers/{openai,gemini}/configure and /status,
/providers/{type}/config, /providers/configs.

API keys are never answered in clear unless the operator allowed it
(``CHAINLOOM_PROVIDER_KEYS_REVEALABLE=true``) and the request asks (``?reveal=true``):
otherwise ``APIKey`` is the key masked (``sk-…wxyz``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chainloom.domain.backends import PROVIDER_TYPES
from chainloom.domain.errors import Unprocessable
from chainloom.domain.providers import MAX_KEY_LENGTH
from chainloom.queries.pagination import Page
from chainloom.web.bodies import json_response, with_body
from chainloom.web.keys import PROVIDER_COMMANDS, PROVIDER_QUERIES
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, path_values, query, responds
from chainloom.web.schemas import Answer, Limit, Message

routes = web.RouteTableDef()


# -- shapes ------------------------------------------------------------------------


class ConfigureBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", json_schema_extra={"required": ["apiKey"]})

    api_key: str = Field(
        "",
        alias="apiKey",
        description="The provider's API key: kept sealed, never answered in clear (unless revealing is enabled).",
        json_schema_extra={"minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[!-~]+$"},
    )
    upsert: bool = Field(False, description="Replace an existing configuration (and reset the provider's backend).")


class ProviderStatus(Answer):
    """``queries.providers.ProviderQueries.status``."""

    configured: bool
    updated_at: datetime = Field(alias="updatedAt", description="When it was last configured; the zero time if not.")
    provider: str


class ProviderConfig(Answer):
    """``queries.providers.ProviderQueries._config_json``: the contract's ``runtimestate_ProviderConfig``."""

    api_key: str = Field(alias="APIKey", description="Masked (`sk-…wxyz`) unless revealed (`?reveal=true`).")
    type: str = Field(alias="Type")
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")


class RevealQuery(BaseModel):
    reveal: bool | None = Field(
        None,
        description="Answer the key in clear: allowed only when the operator set CHAINLOOM_PROVIDER_KEYS_REVEALABLE=true"
        " (403 otherwise).",
    )


class ConfigsQuery(RevealQuery):
    limit: Limit | None = None
    cursor: datetime | None = Field(None, description="Only configurations made before this time (the last `createdAt` seen).")


class ProviderTypePath(BaseModel):
    provider_type: Literal["openai", "gemini"] = Field(alias="providerType", description="Any other type is 404.")


def _reveal(request: web.Request) -> bool:
    value = request.query.get("reveal", "").lower()
    if value in ("", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise Unprocessable("invalid reveal: expected true or false", param="reveal")


# -- per provider type: /configure and /status ---------------------------------------


def _provider_routes(provider_type: str) -> None:
    async def configure(request: web.Request, body: ConfigureBody) -> web.Response:
        await request.app[PROVIDER_COMMANDS].configure(provider_type, body.api_key, body.upsert, command_context(request))
        return json_response(await request.app[PROVIDER_QUERIES].status(provider_type))

    async def status(request: web.Request) -> web.Response:
        return json_response(await request.app[PROVIDER_QUERIES].status(provider_type))

    configure.__name__ = configure.__qualname__ = f"configure_{provider_type}"
    configure.__doc__ = (
        f"Configures the {provider_type} API key and the {provider_type} backend.\n"
        f"Creates the backend `{provider_type}` (id = name = type) when missing; with `upsert` replaces an existing"
        " key (422 otherwise) and resets the backend's name and base URL. The key is stored sealed."
    )
    status.__name__ = status.__qualname__ = f"{provider_type}_status"
    status.__doc__ = f"Tells whether the {provider_type} API key is configured, and since when."
    handler = with_body(ConfigureBody)(configure)
    routes.post(f"/providers/{provider_type}/configure")(fails(409)(responds(200, ProviderStatus)(handler)))
    routes.get(f"/providers/{provider_type}/status")(responds(200, ProviderStatus)(status))


for _type in PROVIDER_TYPES:
    _provider_routes(_type)


# -- configurations ------------------------------------------------------------------


@routes.get("/providers/configs")
@responds(200, list[ProviderConfig])
@query(ConfigsQuery)
@fails(400, 403)
async def list_provider_configs(request: web.Request) -> web.Response:
    """Lists the configured providers, newest first, keys masked."""
    page = Page.parse(request.query.get("limit"), request.query.get("cursor"))
    return json_response(await request.app[PROVIDER_QUERIES].configs(page, _reveal(request)))


@routes.get("/providers/{providerType}/config")
@responds(200, ProviderConfig)
@path_values(ProviderTypePath)
@query(RevealQuery)
@fails(403)
async def get_provider_config(request: web.Request) -> web.Response:
    """Retrieves the configuration of a provider (openai, gemini), its key masked."""
    provider_type = request.match_info["providerType"]
    return json_response(await request.app[PROVIDER_QUERIES].config(provider_type, _reveal(request)))


@routes.delete("/providers/{providerType}/config")
@responds(200, Message)
@path_values(ProviderTypePath)
async def delete_provider_config(request: web.Request) -> web.Response:
    """Removes a provider's configuration (its backend stays, without a key)."""
    await request.app[PROVIDER_COMMANDS].delete_config(request.match_info["providerType"], command_context(request))
    return json_response("Provider config deleted successfully")
