"""Routes of identity: sign-up and sign-in (``/register``, ``/login``, ``/token_refresh``), the UI's cookie flow
(``/ui/*``), users (``/users``), access entries (``/access-control``) and ``GET /permissions``.

Shapes and messages are the older platform's (``spec/platform.md`` §2–5), statuses the root's: a sign-in
refused is 401, a token that does not verify 401 (``TokenRejected``), validation 422, a duplicate e-mail or a
dangling identity 409. Who may call what is ``web.authz``'s; the sign-in routes are public.

A password never leaves the request that carries it but as its hash beside the log, and the answers of
these routes carry tokens: Idempotency-Key is not applied to them (``web.idempotency.unkeyed``), so no
fingerprint of their bodies nor copy of their answers is kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from chainloom.domain.errors import NotFound, TokenRejected, Unauthorized, Unprocessable
from chainloom.domain.identity import MAX_TEXT_BYTES, PERMISSION_LABELS, EntrySpec, Permission, Profile
from chainloom.infra.timefmt import NS_MAX, clamp_ns, format_ns, parse_ns
from chainloom.infra.tokens import Claims
from chainloom.queries.identity import MAX_ROWS
from chainloom.web.authz import COOKIE, IDENTITY, clear_token_cookie, offered_credential, set_token_cookie
from chainloom.web.bodies import json_response, with_body
from chainloom.web.idempotency import unkeyed
from chainloom.web.keys import IDENTITY_COMMANDS, IDENTITY_QUERIES, SETTINGS, TOKENS
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, query, responds
from chainloom.web.schemas import Answer, Message

routes = web.RouteTableDef()

Json = dict[str, Any]
_TEXT: JsonDict = {"maxLength": MAX_TEXT_BYTES}
_EMAIL: JsonDict = {"minLength": 1, "maxLength": MAX_TEXT_BYTES}
# A level's name in any case (JSON Schema's patterns have no case-insensitive flag).
_PERMISSION: JsonDict = {
    "pattern": "^(" + "|".join("".join(f"[{c.lower()}{c.upper()}]" for c in label) for label in PERMISSION_LABELS) + ")$"
}

# -- bodies (unknown fields are ignored; field names match in any case) -----------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class LoginBody(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["email", "password"]})

    email: str = Field("", json_schema_extra=_EMAIL)
    password: str = ""


class _NewUserBody(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["email"]})

    email: str = Field("", description="Unique (compared lower-cased); not checked as an address.", json_schema_extra=_EMAIL)
    password: str = Field("", description="Empty or absent: the user cannot sign in directly.")
    friendly_name: str = Field("", alias="friendlyName", json_schema_extra=_TEXT)

    def profile(self) -> Profile:
        return Profile(self.email, self.friendly_name)


class RegisterBody(_NewUserBody):
    allowed_resources: Any = Field(
        None, alias="allowedResources", description="Ignored: a registration gets `server` (none; manage for the admin)."
    )


class AllowedResource(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["name", "permission", "resourceType"]})

    name: str = Field("", description="The resource.", json_schema_extra=_TEXT)
    permission: str = Field("", json_schema_extra=_PERMISSION)
    resource_type: str = Field("", alias="resourceType", json_schema_extra={"minLength": 1, **_TEXT})

    def spec(self) -> EntrySpec:
        # The identity is the new user's (filled in by the command).
        return EntrySpec("", self.name, self.resource_type, Permission.parse(self.permission))


class UserBody(_NewUserBody):
    allowed_resources: list[AllowedResource] | None = Field(
        None, alias="allowedResources", description="One access entry for each, for the new user (null: none)."
    )


class UserUpdateBody(_Body):
    email: str = Field("", description="Empty or absent: unchanged.", json_schema_extra=_TEXT)
    friendly_name: str = Field("", alias="friendlyName", description="Empty or absent: unchanged.", json_schema_extra=_TEXT)
    password: str = Field("", description="Empty or absent: unchanged.")


class TokenRefreshBody(_Body):
    # Not required: with security off the reference answers any body (an empty token).
    token: str = Field("", description="A valid token (with security on).")


class AccessEntryBody(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["identity", "resource", "resourceType", "permission"]})

    identity: str = Field("", description="A user's subject (its id); else 409.", json_schema_extra=_TEXT)
    resource: str = Field("", json_schema_extra=_TEXT)
    resource_type: str = Field("", alias="resourceType", json_schema_extra={"minLength": 1, **_TEXT})
    permission: str = Field("", description="none, view, edit or manage (any case).", json_schema_extra=_PERMISSION)
    with_user_details: bool = Field(False, alias="withUserDetails", description="Answer the user as `identityDetails`.")

    def spec(self) -> EntrySpec:
        permission = Permission.parse(self.permission)  # the reference's order: the permission first (422)
        return EntrySpec(self.identity, self.resource, self.resource_type, permission)


# -- answers -----------------------------------------------------------------------------------------------


class User(Answer):
    """``queries.identity.user_json``."""

    id: str
    friendly_name: str | None = Field(None, alias="friendlyName", description="Left out when empty.")
    email: str
    subject: str
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")


class FullUser(Answer):
    """``queries.identity.full_user_json``: the secret fields are always empty."""

    id: str
    friendly_name: str = Field(alias="friendlyName")
    email: str
    subject: str
    hashed_password: Literal[""] = Field(alias="hashedPassword")
    recovery_code_hash: Literal[""] = Field(alias="recoveryCodeHash")
    salt: Literal[""]
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")


class SignedIn(Answer):
    """``_signed_in``."""

    user: FullUser
    token: str
    expires_at: datetime


class RefreshedToken(Answer):
    token: str = Field(description='"" when security is off.')


class MessageAnswer(Answer):
    message: str


class IdentityDetails(Answer):
    id: str
    friendly_name: str = Field(alias="friendlyName")
    email: str
    subject: str


class AccessEntry(Answer):
    """``queries.identity.entry_json`` (``entry_with_user_json`` with details)."""

    id: str
    identity: str
    resource: str
    resource_type: str = Field(alias="resourceType")
    permission: Literal["none", "view", "edit", "manage"]
    created_at: datetime = Field(alias="createdAt")
    updated_at: datetime = Field(alias="updatedAt")
    with_user_details: bool | None = Field(None, alias="withUserDetails")
    identity_details: IdentityDetails | None = Field(None, alias="identityDetails", description="With expand=user.")


# -- query strings -------------------------------------------------------------------------------------------

Rows = Annotated[int, Field(ge=1, le=MAX_ROWS, description=f"At most this many (default and most: {MAX_ROWS}).")]


class UsersQuery(BaseModel):
    from_: datetime | None = Field(None, alias="from", description="Only users created before this time (default: now).")
    cursor: datetime | None = Field(None, description="The same as `from` (the contract's name).")
    limit: Rows | None = None


class ExpandQuery(BaseModel):
    expand: str | None = Field(None, description="`user`: answer each entry's user as `identityDetails`.")


class AccessEntriesQuery(ExpandQuery):
    identity: str | None = Field(None, description="Every entry of this identity (`from` is then ignored).")
    from_: datetime | None = Field(None, alias="from", description="Only entries created before this time (default: now).")
    limit: Rows | None = None


def _query(request: web.Request, name: str) -> str:
    """The query value ``name`` ("" when absent); given more than once, refused (it is one value)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise Unprocessable(f"invalid {name}: give it once", param=name)
    return values[0] if values else ""


def _before(request: web.Request, *names: str) -> int:
    """The first of the query values ``names`` given, as a bound in nanoseconds (none: no bound)."""
    for name in names:
        if value := _query(request, name):
            try:
                return clamp_ns(parse_ns(value))
            except ValueError:
                raise Unprocessable(f"invalid {name}: expected an RFC 3339 time", param=name) from None
    return NS_MAX


def _limit(request: web.Request) -> int:
    text = _query(request, "limit")
    if not text:
        return MAX_ROWS
    try:
        limit = int(text)
    except ValueError:
        raise Unprocessable("invalid limit: expected an integer", param="limit") from None
    if not 1 <= limit <= MAX_ROWS:
        raise Unprocessable(f"invalid limit: 1 to {MAX_ROWS}", param="limit")
    return limit


def _with_user(request: web.Request) -> bool:
    return _query(request, "expand") == "user"


# -- sign-up, sign-in, tokens ----------------------------------------------------------------------------------


async def _signed_in(request: web.Request, user_id: str) -> tuple[Json, str, int]:
    """The user as answered, and a token carrying its entries as they are now (with its expiry)."""
    queries = request.app[IDENTITY_QUERIES]
    user = await queries.full_user(user_id)
    token, expires_at = request.app[TOKENS].issue(user_id, await queries.grants_of(user_id))
    return user, token, expires_at


def _token_answer(user: Json, token: str, expires_at: int) -> Json:
    return {"user": user, "token": token, "expires_at": format_ns(expires_at * 1_000_000_000)}


def _with_cookie(request: web.Request, answer: Any, status: int, token: str, expires_at: int) -> web.Response:
    response = json_response(answer, status)
    set_token_cookie(response, token, expires_at, secure=request.app[SETTINGS].cookie_secure)
    return response


async def _register(request: web.Request, body: RegisterBody) -> tuple[Json, str, int]:
    commands = request.app[IDENTITY_COMMANDS]
    user_id = await commands.register(body.profile(), body.password, command_context(request))
    return await _signed_in(request, user_id)


async def _login(request: web.Request, body: LoginBody) -> tuple[Json, str, int]:
    commands = request.app[IDENTITY_COMMANDS]
    user_id = await commands.sign_in(body.email, body.password, command_context(request))
    return await _signed_in(request, user_id)


@routes.post("/register")
@unkeyed
@responds(201, SignedIn)
@fails(409)
@with_body(RegisterBody)
async def register(request: web.Request, body: RegisterBody) -> web.Response:
    """Registers a new user and returns a token (for machine-to-machine or backend-for-frontend flows).

    The user gets one access entry, on `server`: manage for the admin's e-mail, none for anyone else
    (`allowedResources` is ignored). A taken e-mail (compared lower-cased) is 409."""
    return json_response(_token_answer(*await _register(request, body)), 201)


@routes.post("/login")
@unkeyed
@responds(200, SignedIn)
@fails(401)
@with_body(LoginBody)
async def login(request: web.Request, body: LoginBody) -> web.Response:
    """Signs a user in with e-mail and password and returns a token carrying its access entries.

    Refused (401): an unknown e-mail (`libdb: not found`), a wrong password (`invalid credentials`), a user
    without a password (`direct login for this user is disabled`). Every attempt is recorded on the log."""
    return json_response(_token_answer(*await _login(request, body)))


@routes.post("/token_refresh")
@unkeyed
@responds(200, RefreshedToken)
@fails(401)
@with_body(TokenRefreshBody)
async def token_refresh(request: web.Request, body: TokenRefreshBody) -> web.Response:
    """Returns a new token with the same subject and permissions as a valid one, valid from now.

    An expired or invalid token is 401; permissions are not looked up again (sign in for new ones). With
    security off the answer is `{"token": ""}`, as the reference's."""
    if not request.app[SETTINGS].security_enabled:
        return json_response({"token": ""})
    tokens = request.app[TOKENS]
    token, _ = tokens.refresh(tokens.verify(body.token))
    return json_response({"token": token})


@routes.get("/permissions")
@responds(200, list[Literal["none", "view", "edit", "manage"]])
async def list_permissions(request: web.Request) -> web.Response:
    """Returns the permission levels, from least to most: none, view, edit, manage."""
    return json_response(list(PERMISSION_LABELS))


# -- the UI's cookie flow --------------------------------------------------------------------------------------


@routes.post("/ui/login")
@unkeyed
@responds(200, FullUser)
@fails(401)
@with_body(LoginBody)
async def ui_login(request: web.Request, body: LoginBody) -> web.Response:
    """Signs a user in and sets the `auth_token` cookie (HttpOnly, SameSite=Strict); answers the user.

    Refused as `POST /login`."""
    user, token, expires_at = await _login(request, body)
    return _with_cookie(request, user, 200, token, expires_at)


@routes.post("/ui/register")
@unkeyed
@responds(201, FullUser)
@fails(409)
@with_body(RegisterBody)
async def ui_register(request: web.Request, body: RegisterBody) -> web.Response:
    """Registers a new user as `POST /register` does and sets the `auth_token` cookie; answers the user."""
    user, token, expires_at = await _register(request, body)
    return _with_cookie(request, user, 201, token, expires_at)


@routes.post("/ui/logout")
@unkeyed
@responds(200, MessageAnswer)
async def ui_logout(request: web.Request) -> web.Response:
    """Clears the `auth_token` cookie. Always succeeds."""
    response = json_response({"message": "logout successful"})
    clear_token_cookie(response)
    return response


def _caller(request: web.Request) -> Claims:
    """The claims of the caller's token: as authorization verified them, else (security off, where nothing
    is verified on the way) the token it offers, verified here."""
    claims = request.get(IDENTITY)
    if claims is not None:
        return claims
    offered = offered_credential(request)
    if not offered:
        raise TokenRejected("invalid token claims: no token (send the auth_token cookie or Authorization: Bearer)")
    return request.app[TOKENS].verify(offered)


@routes.get("/ui/me")
@responds(200, FullUser)
@fails(401)
async def ui_me(request: web.Request) -> web.Response:
    """Returns the user the caller's token (cookie or bearer) was issued to.

    No token, an invalid one, or one of a user deleted since: 401."""
    claims = _caller(request)
    try:
        return json_response(await request.app[IDENTITY_QUERIES].full_user(claims.subject))
    except NotFound:
        raise Unauthorized("the token's user no longer exists: libdb: not found") from None


@routes.post("/ui/token_refresh")
@unkeyed
@responds(200, MessageAnswer)
@fails(401)
async def ui_token_refresh(request: web.Request) -> web.Response:
    """Refreshes the token of the `auth_token` cookie (the cookie only) and sets the new one.

    No cookie, or an expired or invalid token in it: 401."""
    offered = request.cookies.get(COOKIE, "")
    if not offered:
        raise TokenRejected("invalid token claims: no auth_token cookie")
    tokens = request.app[TOKENS]
    token, expires_at = tokens.refresh(tokens.verify(offered))
    return _with_cookie(request, {"message": "token refreshed"}, 200, token, expires_at)


# -- users -----------------------------------------------------------------------------------------------------


@routes.post("/users")
@unkeyed
@responds(201, User)
@fails(400, 409)
@with_body(UserBody)
async def create_user(request: web.Request, body: UserBody) -> web.Response:
    """Creates a user, with one access entry per `allowedResources` item (its `name` the resource).

    An invalid permission is 422, an empty resourceType 400; a taken e-mail 409. Unlike `/register`, no entry on
    `server` is added."""
    entries = [allowed.spec() for allowed in body.allowed_resources or ()]
    commands = request.app[IDENTITY_COMMANDS]
    user_id = await commands.create_user(body.profile(), body.password, entries, command_context(request))
    return json_response(await request.app[IDENTITY_QUERIES].user(user_id), 201)


@routes.get("/users")
@responds(200, list[User])
@query(UsersQuery)
async def list_users(request: web.Request) -> web.Response:
    """Lists users, newest first, created before `from` (or `cursor`)."""
    before = _before(request, "from", "cursor")
    return json_response(await request.app[IDENTITY_QUERIES].users(before, _limit(request)))


@routes.get("/users/{id}")
@responds(200, User)
async def get_user(request: web.Request) -> web.Response:
    """Retrieves a user by its id."""
    return json_response(await request.app[IDENTITY_QUERIES].user(request.match_info["id"]))


@routes.put("/users/{id}")
@unkeyed
@responds(200, User)
@fails(409)
@with_body(UserUpdateBody)
async def update_user(request: web.Request, body: UserUpdateBody) -> web.Response:
    """Changes a user's e-mail, friendly name or password: each only when given non-empty.

    A taken e-mail is 409. Tokens already issued stay valid until they expire."""
    user_id = request.match_info["id"]
    commands = request.app[IDENTITY_COMMANDS]
    await commands.update_user(user_id, body.email, body.friendly_name, body.password, command_context(request))
    return json_response(await request.app[IDENTITY_QUERIES].user(user_id))


@routes.delete("/users/{id}")
@responds(200, Message)
async def delete_user(request: web.Request) -> web.Response:
    """Deletes a user, its access entries and its password."""
    await request.app[IDENTITY_COMMANDS].delete_user(request.match_info["id"], command_context(request))
    return json_response("user removed")


# -- access entries --------------------------------------------------------------------------------------------


async def _entry_answer(request: web.Request, entry_id: str, with_user: bool) -> Json:
    entry = await request.app[IDENTITY_QUERIES].entry(entry_id, with_user)
    return {**entry, "withUserDetails": True} if with_user else entry


@routes.post("/access-control")
@responds(201, AccessEntry)
@fails(400, 409)
@with_body(AccessEntryBody)
async def create_access_entry(request: web.Request, body: AccessEntryBody) -> web.Response:
    """Grants an identity (a user's subject) a permission level on a resource.

    An unknown permission is 422, an empty resourceType 400 (`serverops: missing parameter`), an identity
    that is no user's 409. `withUserDetails: true` answers the user as `identityDetails`."""
    spec = body.spec()
    entry_id = await request.app[IDENTITY_COMMANDS].grant(spec, command_context(request))
    return json_response(await _entry_answer(request, entry_id, body.with_user_details), 201)


@routes.get("/access-control")
@responds(200, list[AccessEntry])
@query(AccessEntriesQuery)
async def list_access_entries(request: web.Request) -> web.Response:
    """Lists access entries, newest first: every entry of `identity`, or else those created before `from`."""
    entries = await request.app[IDENTITY_QUERIES].entries(
        _query(request, "identity") or None, _before(request, "from"), _limit(request), _with_user(request)
    )
    return json_response(entries)


@routes.get("/access-control/{id}")
@responds(200, AccessEntry)
@query(ExpandQuery)
async def get_access_entry(request: web.Request) -> web.Response:
    """Retrieves an access entry by its id."""
    return json_response(await request.app[IDENTITY_QUERIES].entry(request.match_info["id"], _with_user(request)))


@routes.put("/access-control/{id}")
@responds(200, AccessEntry)
@fails(400, 409)
@with_body(AccessEntryBody)
async def update_access_entry(request: web.Request, body: AccessEntryBody) -> web.Response:
    """Replaces an access entry whole (the path's id wins over the body's), validated as when granted."""
    entry_id = request.match_info["id"]
    await request.app[IDENTITY_COMMANDS].change_entry(entry_id, body.spec(), command_context(request))
    return json_response(await _entry_answer(request, entry_id, body.with_user_details))


@routes.delete("/access-control/{id}")
@responds(200, Message)
async def delete_access_entry(request: web.Request) -> web.Response:
    """Revokes an access entry at once (tokens issued before still carry it until they expire)."""
    await request.app[IDENTITY_COMMANDS].revoke(request.match_info["id"], command_context(request))
    return json_response("access entry removed")
