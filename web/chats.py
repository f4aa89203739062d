"""Routes of chat sessions: ``POST /chats``, ``GET /chats``, ``GET /chats/{id}``, ``POST /chats/{id}/chat``,
``POST /chats/{id}/instruction`` (platform notes §10.1).

A chat belongs to the caller who starts it (the token's subject; ``api-key`` for
the service key). ``GET /chats`` lists the caller's chats; ``GET /chats/{id}`` is
any chat's history (no ownership check, as the notes say; an unknown id is
``[]``). A turn runs ``chat_chain`` (``commands.chats``) and answers
``{"response", "state", "inputTokenCount", "outputTokenCount"}``; an empty
message is 422 ``message is required``, an unknown chat 409, a chain that fails
422 ``chain execution failed: …`` (502/503 when its LLM backend refused or was
unavailable). An instruction is appended as a system message.

A turn streams when asked (``"stream": true`` or ``Accept: text/event-stream``):
Server-Sent Events, one ``event: piece`` / ``data: {"content": "…"}`` per piece of
the model step's reply as it arrives, then ``event: reply`` with the whole answer
(after the turn is recorded). The stream opens with its first frame: a failure
before it is an ordinary JSON error; one after it is a last ``event: error``
frame holding the error envelope. A client that goes away mid-stream does not
stop the turn: it is still recorded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chainloom.commands.chat_chains import CHAT_CHAIN
from chainloom.commands.chats import ChatReply
from chainloom.domain.errors import DomainError
from chainloom.web.bodies import json_response, parse_object, read_json_object, read_limited, with_body
from chainloom.web.errors import error_response, status_of
from chainloom.web.keys import CHAT_COMMANDS, CHAT_QUERIES, SETTINGS
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, responds
from chainloom.web.sse import open_stream
from chainloom.web.schemas import Answer
from chainloom.web.tasks import CapturedState

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

EVENT_STREAM = "text/event-stream"

# -- bodies (unknown fields are ignored; field names match in any case) -------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class CreateChatBody(_Body):
    """What ``POST /chats`` may carry (not documented: clients send no body)."""

    subject: str | None = Field(None, description="Ignored (the reference's field): the chat is the caller's.")


class ChatBody(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["message"]})

    message: str = Field(
        "", description="What the user says (422 `message is required` when empty).", json_schema_extra={"minLength": 1}
    )
    models: list[str] | None = Field(None, description="The models the chain's model step runs on (this turn).")
    provider: str | None = Field(None, description="The provider type the chain's model step runs on (this turn).")
    stream: bool | None = Field(None, description="Server-Sent Events: the reply's pieces as they come, then the answer.")


class InstructionBody(_Body):
    model_config = ConfigDict(json_schema_extra={"required": ["instruction"]})

    instruction: str = Field(
        "", description="Appended to the chat as a system message.", json_schema_extra={"minLength": 1}
    )


# -- answers -------------------------------------------------------------------------------------------------


class ChatCreated(Answer):
    id: str


class ChatListItem(Answer):
    """``queries.chats.chat_json``."""

    id: str
    started_at: str = Field(alias="startedAt", json_schema_extra={"format": "date-time"})
    backend_id: str = Field(alias="backendId", description="Always empty.")


class HistoryMessage(Answer):
    """``queries.chats.ChatQueries.history``."""

    id: str = Field(description="SHA-1 hex of chat id + content + role + sent time (seconds).")
    role: str
    content: str
    sent_at: str = Field(alias="sentAt", json_schema_extra={"format": "date-time"})
    is_user: bool = Field(alias="isUser")
    is_latest: bool = Field(alias="isLatest")


class ChatAnswer(Answer):
    response: str = Field(description="The text of the chain's last message.")
    state: list[CapturedState] = Field(description="The chain run's steps.")
    input_token_count: int = Field(alias="inputTokenCount", description="Prompt tokens of the model step (0: none).")
    output_token_count: int = Field(alias="outputTokenCount", description="Completion tokens of the model step.")


class InstructionAdded(Answer):
    resp: str = Field(json_schema_extra={"const": "instruction added"})


_STREAMED = (
    "The turn's answer; when streamed (`stream: true` or `Accept: text/event-stream`), `text/event-stream` instead:"
    ' `event: piece` / `data: {"content": "…"}` per piece of the reply, then `event: reply` with this answer'
    " (a failure after the first frame: a last `event: error` with the error envelope)."
)


def _answer(reply: ChatReply) -> dict[str, Any]:
    return {
        "response": reply.response,
        "state": reply.state,
        "inputTokenCount": reply.input_tokens,
        "outputTokenCount": reply.output_tokens,
    }


# -- routes ----------------------------------------------------------------------------------------------------


@routes.post("/chats")
@responds(201, ChatCreated)
async def create_chat(request: web.Request) -> web.Response:
    """Starts a chat session owned by the caller; the answer is the new chat's id.

    No body is needed (the contract's clients send none). One may be sent, a JSON object: its `subject` (the
    reference's field) is ignored."""
    raw = await read_limited(request, request.app[SETTINGS].json_body_limit)
    if raw.strip():
        parse_object(await read_json_object(request), CreateChatBody)
    context = command_context(request)
    chat_id = await request.app[CHAT_COMMANDS].create(context.actor, context)
    return json_response({"id": chat_id}, 201)


@routes.get("/chats")
@responds(200, list[ChatListItem])
async def list_chats(request: web.Request) -> web.Response:
    """Lists the caller's chat sessions, newest first (at most 1000)."""
    return json_response(await request.app[CHAT_QUERIES].owned_by(command_context(request).actor))


@routes.get("/chats/{id}")
@responds(200, list[HistoryMessage])
async def chat_history(request: web.Request) -> web.Response:
    """A chat's messages, oldest first (`isLatest` on the last one).

    Any chat's, whoever started it; a chat that does not exist has none (`[]`)."""
    return json_response(await request.app[CHAT_QUERIES].history(request.match_info["id"]))


@routes.post("/chats/{id}/chat")
@responds(200, ChatAnswer, _STREAMED)
@fails(404, 409, 502, 503)
@with_body(ChatBody)
async def chat(request: web.Request, body: ChatBody) -> web.StreamResponse:
    """Sends a message to a chat: runs `chat_chain` on the chat's history and records the turn.

    The chain's last message must be the assistant's (or a system message): its text is `response`, the run's
    steps `state`, the model step's token counts `inputTokenCount`/`outputTokenCount`. `models` and `provider`
    route the chain's model step for this turn. 422: an empty message, or a chain that failed; 409: no such chat;
    404: `chat_chain` is not stored; 502/503: its LLM backend refused or was unavailable."""
    if body.stream or EVENT_STREAM in request.headers.get("Accept", ""):
        return await _streamed(request, body)
    return json_response(_answer(await _turn(request, body)))


async def _turn(
    request: web.Request, body: ChatBody, on_piece: Callable[[str], Awaitable[None]] | None = None
) -> ChatReply:
    """The turn the request asks for (``on_piece``: each piece of a streaming model reply as it arrives)."""
    return await request.app[CHAT_COMMANDS].chat(
        request.match_info["id"],
        body.message,
        command_context(request),
        chain_id=CHAT_CHAIN,
        models=body.models or (),
        provider=body.provider or "",
        on_piece=on_piece,
    )


@routes.post("/chats/{id}/instruction")
@responds(200, InstructionAdded)
@fails(409)
@with_body(InstructionBody)
async def add_instruction(request: web.Request, body: InstructionBody) -> web.Response:
    """Adds an instruction to a chat: a system message the next turns' chain sees.

    422 `instruction is required` when empty; 409 when the chat does not exist."""
    await request.app[CHAT_COMMANDS].instruct(request.match_info["id"], body.instruction, command_context(request))
    return json_response({"resp": "instruction added"})


# -- streaming ----------------------------------------------------------------------------------------------------


def _frame(event: str, value: Any) -> bytes:
    # ASCII escapes: a model's text may hold what UTF-8 cannot encode (a lone surrogate).
    return f"event: {event}\ndata: ".encode() + json.dumps(value, separators=(",", ":")).encode() + b"\n\n"


class _TurnStream:
    """The SSE answer of one streamed turn, opened with its first frame."""

    def __init__(self, request: web.Request) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None
        self.gone = False

    async def send(self, data: bytes) -> None:
        if self.response is None:
            self.response = await open_stream(self.request)
        await self.response.write(data)

    async def piece(self, text: str) -> None:
        """``on_piece``: sent at once — unless the client has gone, whose turn goes on to be recorded."""
        if not text or self.gone:
            return
        try:
            await self.send(_frame("piece", {"content": text}))
        except ConnectionError:
            self.gone = True
            logger.debug("chat stream client went away; the turn goes on")


async def _streamed(request: web.Request, body: ChatBody) -> web.StreamResponse:
    stream = _TurnStream(request)
    try:
        reply = await _turn(request, body, stream.piece)
        if not stream.gone:
            await stream.send(_frame("reply", _answer(reply)))
    except DomainError as error:
        if stream.response is None:
            raise  # nothing sent yet: an ordinary error answer
        envelope = error_response(status_of(error), error.message).body
        assert isinstance(envelope, bytes)
        try:
            await stream.send(b"event: error\ndata: " + envelope.strip() + b"\n\n")
        except ConnectionError:
            pass
    except ConnectionError:
        if stream.response is None:
            raise
    if stream.response is None:  # the client went away before anything was sent
        raise ConnectionResetError("the client went away")
    return stream.response
