"""The OpenAI-compatible chat endpoints: ``POST /openai/{chainID}/v1/chat/completions`` and ``POST /v1/chat/completions``.

A chat request (OpenAI's shape, notes §3.1) runs a task chain as its input of type ``openai_chat``, with
the request's ``tools`` as the run's client tools (``commands.tasks.TaskEngine``); a message keeps its
``tool_calls``/``tool_call_id`` (the notes drop them; a turn after a tool answer needs them). The chain's result
becomes the answer (§9.1): a ``chat_history`` is converted to a ``chat.completion``, an
``openai_chat_response`` is used as it is; ``model`` echoes the request's, and ``usage`` is always
positive (estimated — ``commands.tasks.estimate_tokens`` — where the chain has no count: OpenAI clients
check it). A chain failure is 422 ``chain execution failed: <error>`` (the reference's 500 on /tasks),
an invalid chain 400, a missing one 404.

``"stream": true`` streams for real (unlike the reference, which splits the finished reply into words):
the run's ``model_execution`` tasks without tools stream their reply (``on_piece``), and each piece is
sent as a ``chat.completion.chunk`` the moment it arrives — the first with ``"role": "assistant"`` in its
delta. When the run is over, a reply that was not streamed (a tool-call turn, a chain without a streaming
task) is sent as one chunk, tool calls as one ``tool_calls`` delta; then the final chunk (``"delta": {}``
and ``finish_reason``), with ``stream_options.include_usage`` a usage chunk, then ``data: [DONE]``.
The SSE answer starts with the first piece: anything that fails before it is an ordinary JSON error
with its status; a failure after it is sent as a last event ``data: {"error": {...}}`` (the error
envelope, which the OpenAI SDKs raise as an ``APIError``) and the stream ends without ``[DONE]``.

``POST /v1/chat/completions`` runs the chain named by ``CHAINLOOM_DEFAULT_CHAT_CHAIN``; unset, the
built-in chain ``chainloom-chat`` (built per request, never stored): one ``model_execution`` on the
request's model (on whichever backend type holds it; the default chat model when none is named), with
the client's tools, then ``convert_to_openai_chat_response``.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from chainloom.commands.tasks import RunResult, estimate_tokens, to_chat_completion
from chainloom.domain.errors import DomainError, NotFound, Unprocessable
from chainloom.domain.taskchains import Branch, ChainDefinition, ExecuteConfig, TaskDefinition, Transition
from chainloom.domain.taskengine import ChainFailed
from chainloom.domain.taskengine.values import CHAT_HISTORY, OPENAI_CHAT, OPENAI_CHAT_RESPONSE
from chainloom.web.bodies import JsonInt, json_response, read_body
from chainloom.web.errors import error_response, status_of
from chainloom.web.keys import SETTINGS, TASK_ENGINE, TASKCHAIN_QUERIES
from chainloom.web.middleware import command_context
from chainloom.web.openapi import fails, query, request_body, responds
from chainloom.web.sse import open_stream

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

BUILTIN_CHAT_CHAIN = "chainloom-chat"
_ALL_PROVIDER_TYPES = ("ollama", "vllm", "openai", "gemini")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool
_DONE = b"data: [DONE]\n\n"


# -- the request (notes §3.1; unknown keys are ignored) --------------------------------------------


class CalledFunction(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    name: str
    arguments: str = Field("", description="JSON text.")


class CalledTool(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    id: str = ""
    type: str = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: str = Field(description="system, user, assistant or tool.")
    content: str | None = Field(
        None, description="Text only: an array of content parts is refused (422). Other keys of a message are ignored."
    )
    tool_calls: list[CalledTool] | None = Field(None, description="An assistant turn's tool calls (kept for the chain).")
    tool_call_id: str | None = Field(None, description="The call a tool message answers (kept for the chain).")


class ToolFunction(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="A JSON Schema of the arguments.")


class Tool(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: str = "function"
    function: ToolFunction


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    include_usage: bool | None = Field(None, description="Send a chunk with the usage (and no choices) before [DONE].")


class ChatCompletionBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", json_schema_extra={"required": ["messages"]})

    model: str | None = Field(None, description="Echoed in the answer; the built-in chain runs it.")
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = Field(None, description="The run's client tools (offered where a task passes them on).")
    tool_choice: Any = None
    max_tokens: JsonInt | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    n: JsonInt | None = None
    stream: bool | None = Field(None, description="Server-Sent Events of chat.completion.chunk objects.")
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    user: str | None = None


class StackTraceQuery(BaseModel):
    stack_trace: str | None = Field(
        None, alias="stackTrace", description="`true`: the answer carries the run's captured state (not when streaming)."
    )


# -- the answers (described in /openapi.json) -----------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


class FunctionCall(_Answer):
    name: str
    arguments: str = Field(description="JSON text.")


class ToolCallAnswer(_Answer):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AnswerMessage(_Answer):
    role: str
    content: str | None = None
    tool_calls: list[ToolCallAnswer] | None = None


class Choice(_Answer):
    index: int
    message: AnswerMessage
    finish_reason: str


class Usage(_Answer):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(_Answer):
    id: str
    object: Literal["chat.completion"]
    created: int = Field(description="Unix seconds.")
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    stack_trace: list[dict[str, Any]] | None = Field(
        None, alias="stackTrace", description="With ?stackTrace=true: the run's CapturedStateUnits."
    )


# One answer per status can be described: the stream is described in words.
_ANSWERED = (
    "A chat completion; with `stream: true`, `text/event-stream` instead: one `data: <chat.completion.chunk JSON>`"
    " event per chunk, then `data: [DONE]` (a failure after the first chunk: a last `data: {\"error\": {...}}`)."
)


# -- routes ----------------------------------------------------------------------------------------------


@routes.post("/openai/{chainID}/v1/chat/completions")
@responds(200, ChatCompletion, _ANSWERED)
@query(StackTraceQuery)
@fails(400, 404, 502, 503)
@request_body(ChatCompletionBody)
async def chain_chat_completions(request: web.Request) -> web.StreamResponse:
    """Runs the task chain on an OpenAI chat request and answers a chat completion (or streams it).

    The request is the chain's input (type openai_chat) and its tools the run's client tools. The chain
    must end in a chat_history (converted) or an openai_chat_response; `model` echoes the request's and
    `usage` is always positive (estimated when the chain has no count). 404: no such chain; 400: an
    invalid chain; 422: a bad body, a chain failure (`chain execution failed: …`) or an unusable result.
    `stream: true` sends each piece of a streaming model_execution as it arrives (Server-Sent Events)."""
    body = await _read_request(request)
    chain_id = request.match_info["chainID"]
    return await _complete(request, body, await _stored_chain(request, chain_id))


@routes.post("/v1/chat/completions")
@responds(200, ChatCompletion, _ANSWERED)
@query(StackTraceQuery)
@fails(400, 404, 502, 503)
@request_body(ChatCompletionBody)
async def chat_completions(request: web.Request) -> web.StreamResponse:
    """OpenAI's chat completions on the default chain: any OpenAI client pointed at chainloom works.

    Runs the chain named by CHAINLOOM_DEFAULT_CHAT_CHAIN (404 when it is not stored); unset, the
    built-in chain `chainloom-chat`: the request's model (the default chat model when none is named) on
    whichever backend holds it, with the client's tools. Otherwise as /openai/{chainID}/v1/chat/completions."""
    body = await _read_request(request)
    configured = request.app[SETTINGS].default_chat_chain
    chain = await _stored_chain(request, configured) if configured else builtin_chain(body.model or "")
    return await _complete(request, body, chain)


# -- the work ----------------------------------------------------------------------------------------------


async def _read_request(request: web.Request) -> ChatCompletionBody:
    try:
        return await read_body(request, ChatCompletionBody)
    except Unprocessable as error:
        if error.param and error.param.startswith("messages.") and error.param.endswith(".content"):
            error.message += " (content must be a string: arrays of content parts are not supported)"
            error.args = (error.message,)
        raise


def builtin_chain(model: str) -> ChainDefinition:
    """``chainloom-chat``: ``model`` (any backend type holding it; empty: the chat defaults) with the client's
    tools, its reply converted to a chat completion."""
    config = ExecuteConfig(model=model, providers=_ALL_PROVIDER_TYPES if model else (), pass_clients_tools=True)
    return ChainDefinition(
        id=BUILTIN_CHAT_CHAIN,
        description="OpenAI chat: the request's model, answered as a chat completion",
        tasks=(
            TaskDefinition(
                id="chat",
                handler="model_execution",
                execute_config=config,
                transition=Transition(branches=(Branch("default", "", "reply"),)),
            ),
            TaskDefinition(
                id="reply",
                handler="convert_to_openai_chat_response",
                transition=Transition(branches=(Branch("default", "", "end"),)),
            ),
        ),
    )


async def _stored_chain(request: web.Request, chain_id: str) -> ChainDefinition:
    chain = await request.app[TASKCHAIN_QUERIES].definition(chain_id)
    if chain is None:
        raise NotFound(f"failed to load task chain '{chain_id}': failed to get task chain: libdb: not found")
    return chain


def chain_input(body: ChatCompletionBody) -> dict[str, Any]:
    """The request as the chain's ``openai_chat`` value: ``model``, ``messages``, and the other keys the notes
    keep when they are not empty. A message is its role and content, and — beyond the notes, which drop
    them — an assistant turn's ``tool_calls`` and a tool message's ``tool_call_id`` (continuing after a tool
    answer needs them)."""
    messages = []
    for m in body.messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content or ""}
        if m.tool_calls:
            item["tool_calls"] = [call.model_dump() for call in m.tool_calls]
        if m.tool_call_id:
            item["tool_call_id"] = m.tool_call_id
        messages.append(item)
    value: dict[str, Any] = {"model": body.model or "", "messages": messages}
    for key in ("tool_choice", "max_tokens", "temperature", "top_p", "stop", "n", "stream", "presence_penalty",
                "frequency_penalty", "user"):
        given = getattr(body, key)
        if given not in (None, "", 0, False, []):
            value[key] = given
    if body.tools:
        value["tools"] = client_tools(body)
    return value


def client_tools(body: ChatCompletionBody) -> list[dict[str, Any]]:
    return [tool.model_dump(exclude_none=True) for tool in body.tools or ()]


def completion_id() -> str:
    return f"chatcmpl-{time.time_ns()}-{secrets.token_hex(2)}"


def _stack_trace_wanted(request: web.Request) -> bool:
    return request.query.get("stackTrace", "") in _TRUE


async def _complete(request: web.Request, body: ChatCompletionBody, chain: ChainDefinition) -> web.StreamResponse:
    if body.stream:
        return await _stream(request, body, chain)
    engine = request.app[TASK_ENGINE]
    try:
        result = await engine.run(
            chain, chain_input(body), OPENAI_CHAT, client_tools=client_tools(body), ctx=command_context(request)
        )
    except ChainFailed as error:
        raise error.as_answer(f"chain execution failed: {error.message}") from None
    completion = completion_of(result, body, completion_id())
    if _stack_trace_wanted(request) and result.state:
        completion["stackTrace"] = result.state
    return json_response(completion)


def completion_of(result: RunResult, body: ChatCompletionBody, answer_id: str) -> dict[str, Any]:
    """The chain's result as the chat completion to answer (422 when it is none)."""
    output, kind = result.output, result.output_type
    if output is None:
        raise Unprocessable("empty result from chain execution")
    if kind == CHAT_HISTORY and isinstance(output, dict):
        completion = to_chat_completion(output, answer_id)
    elif kind == OPENAI_CHAT_RESPONSE and isinstance(output, dict):
        completion = dict(output)
    else:
        raise Unprocessable(f"invalid result type from chain: {kind}")
    if body.model:
        completion["model"] = body.model
    completion.setdefault("id", answer_id)
    completion.setdefault("object", "chat.completion")
    completion.setdefault("created", int(time.time()))
    completion.setdefault("model", "")
    completion.setdefault("choices", [])
    if not completion.get("system_fingerprint"):
        completion.pop("system_fingerprint", None)
    completion["usage"] = usage_of(completion, body)
    return completion


def usage_of(completion: dict[str, Any], body: ChatCompletionBody) -> dict[str, int]:
    """The completion's usage with each count > 0: what the chain counted, else an estimate."""
    counted = completion.get("usage")
    usage: dict[str, Any] = counted if isinstance(counted, dict) else {}
    prompt = _count(usage.get("prompt_tokens"))
    if prompt <= 0:
        prompt = max(1, sum(estimate_tokens(m.content or "") for m in body.messages))
    produced = _count(usage.get("completion_tokens"))
    if produced <= 0:
        produced = max(1, estimate_tokens(_reply_text(completion)))
    return {"prompt_tokens": prompt, "completion_tokens": produced, "total_tokens": prompt + produced}


def _count(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _reply_text(completion: dict[str, Any]) -> str:
    """What the reply says: its content, or its tool calls' names and arguments."""
    parts: list[str] = []
    for choice in completion.get("choices") or ():
        message = (choice.get("message") if isinstance(choice, dict) else None) or {}
        if isinstance(message.get("content"), str):
            parts.append(message["content"])
        for call in message.get("tool_calls") or ():
            function = (call.get("function") if isinstance(call, dict) else None) or {}
            parts.append(str(function.get("name", "")) + str(function.get("arguments", "")))
    return "".join(parts)


# -- streaming ------------------------------------------------------------------------------------------------


def _frame(value: Any) -> bytes:
    # ASCII escapes: a model's text may hold what UTF-8 cannot encode (a lone surrogate).
    return b"data: " + json.dumps(value, separators=(",", ":")).encode() + b"\n\n"


class _ChunkStream:
    """The SSE answer of one streamed completion, opened with its first chunk."""

    def __init__(self, request: web.Request, model: str) -> None:
        self.request = request
        self.response: web.StreamResponse | None = None
        self.head: dict[str, Any] = {"id": completion_id(), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        self.streamed: list[str] = []

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": delta}
        if finish_reason is not None:
            choice["finish_reason"] = finish_reason
        return _frame({**self.head, "choices": [choice]})

    async def send(self, data: bytes) -> None:
        if self.response is None:
            self.response = await open_stream(self.request)
        await self.response.write(data)

    async def piece(self, text: str) -> None:
        """``on_piece``: a piece of a streaming task's reply, sent at once."""
        if not text:
            return
        delta = {"content": text} if self.streamed else {"role": "assistant", "content": text}
        self.streamed.append(text)
        await self.send(self.chunk(delta))

    async def finish(self, completion: dict[str, Any], include_usage: bool) -> None:
        choices = completion.get("choices") or []
        message = (choices[0].get("message") or {}) if choices else {}
        calls = message.get("tool_calls") or []
        frames: list[bytes] = []
        first = not self.streamed
        content = message.get("content")
        if not self.streamed and isinstance(content, str) and content:
            frames.append(self.chunk({"role": "assistant", "content": content}))
            first = False
        if calls:
            delta: dict[str, Any] = {"tool_calls": [{"index": i, **call} for i, call in enumerate(calls)]}
            if first:
                delta = {"role": "assistant", **delta}
            frames.append(self.chunk(delta))
        finish_reason = choices[0].get("finish_reason") if choices else None
        frames.append(self.chunk({}, finish_reason or ("tool_calls" if calls else "stop")))
        if include_usage:
            frames.append(_frame({**self.head, "choices": [], "usage": completion["usage"]}))
        frames.append(_DONE)
        await self.send(b"".join(frames))

    async def fail(self, status: int, message: str) -> None:
        """A failure after the first chunk: a last event with the error envelope."""
        envelope = error_response(status, message).body
        assert isinstance(envelope, bytes)
        await self.send(b"data: " + envelope + b"\n\n")


async def _stream(request: web.Request, body: ChatCompletionBody, chain: ChainDefinition) -> web.StreamResponse:
    stream = _ChunkStream(request, body.model or "")
    engine = request.app[TASK_ENGINE]
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    try:
        try:
            result = await engine.run(
                chain,
                chain_input(body),
                OPENAI_CHAT,
                client_tools=client_tools(body),
                on_piece=stream.piece,
                ctx=command_context(request),
            )
        except ChainFailed as error:
            raise error.as_answer(f"chain execution failed: {error.message}") from None
        completion = completion_of(result, body, stream.head["id"])
        if not completion["choices"] and stream.response is None:
            raise Unprocessable("no choices returned from the model")
        await stream.finish(completion, include_usage)
    except DomainError as error:
        if stream.response is None:
            raise  # nothing sent yet: an ordinary error answer
        logger.info("chat stream of %s failed after its first chunk: %s", chain.id, error.message)
        try:
            await stream.fail(status_of(error), error.message)
        except ConnectionError:
            pass
    except ConnectionError:
        if stream.response is None:
            raise
        logger.debug("chat stream client went away")
    assert stream.response is not None
    return stream.response
