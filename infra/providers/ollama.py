"""Ollama: /api/tags, /api/pull, /api/delete, /api/generate, /api/chat (plain and streamed), /api/embeddings.

An answer counts only when it ends with ``done_reason`` ``stop`` and has content (or, for chat, tool
calls); ``length`` is a token limit. Ollama servers from before ``done_reason`` existed end with ``done``
alone, which is taken as ``stop``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

from chainloom.domain.runtime import PulledModel
from chainloom.infra.providers._http import HttpAdapter, dumps, loads
from chainloom.infra.providers.base import (
    ChatOptions,
    ChatResult,
    Message,
    ProviderRefused,
    ProviderUnavailable,
    PullProgress,
    TokenLimit,
    ToolCall,
)

_DEFAULT = ChatOptions()
_DETAILS = (
    ("parent_model", "parentModel"),
    ("format", "format"),
    ("family", "family"),
    ("families", "families"),
    ("parameter_size", "parameterSize"),
    ("quantization_level", "quantizationLevel"),
)


def _options(options: ChatOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if options is _DEFAULT:
        return out
    if options.temperature is not None:
        out["temperature"] = options.temperature
    if options.max_tokens is not None:
        out["num_predict"] = options.max_tokens
    if options.top_p is not None:
        out["top_p"] = options.top_p
    if options.seed is not None:
        out["seed"] = options.seed
    return out


def _message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": call.name, "arguments": _arguments(call.arguments)}} for call in message.tool_calls
        ]
    return out


def _arguments(text: str) -> Any:
    """A tool call's arguments as Ollama takes them: the JSON object, not its text."""
    try:
        return loads(text or "{}")
    except ValueError:
        return text


class OllamaClient(HttpAdapter):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        base = self.endpoint.base_url.rstrip("/")
        self._tags = base + "/api/tags"
        self._pull = base + "/api/pull"
        self._delete = base + "/api/delete"
        self._generate = base + "/api/generate"
        self._chat = base + "/api/chat"
        self._embeddings = base + "/api/embeddings"

    async def list_models(self) -> list[PulledModel]:
        body = await self._call("GET", self._tags, None, self._timeouts.listing)
        entries = body.get("models") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            self._fail(ProviderUnavailable, "answered /api/tags without a models list")
        models = []
        for entry in entries:
            details = entry.get("details") or {}
            models.append(
                PulledModel(
                    name=str(entry.get("name") or entry.get("model") or ""),
                    model=str(entry.get("model") or entry.get("name") or ""),
                    modified_at=str(entry.get("modified_at") or ""),
                    size=int(entry.get("size") or 0),
                    digest=str(entry.get("digest") or ""),
                    details={ours: details[theirs] for theirs, ours in _DETAILS if theirs in details},
                )
            )
        return models

    def _body(self, model: str, messages: Sequence[Message], options: ChatOptions, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": [_message(m) for m in messages],
            "stream": stream,
            "think": False,
        }
        if opts := _options(options):
            body["options"] = opts
        if options.tools:
            body["tools"] = list(options.tools)
        return body

    def _check_end(self, model: str, answer: dict[str, Any]) -> None:
        if "error" in answer:
            self._fail(ProviderRefused, f"model '{model}' failed: {answer['error']}")
        reason = answer.get("done_reason") or ("stop" if answer.get("done") else "")
        if reason == "stop":
            return
        if reason == "length":
            self._fail(TokenLimit, f"model '{model}' reached its token limit (done_reason length)")
        self._fail(ProviderRefused, f"model '{model}' stopped unexpectedly (done_reason {reason or 'missing'})")

    async def chat(self, model: str, messages: Sequence[Message], options: ChatOptions = _DEFAULT) -> ChatResult:
        answer = await self._call("POST", self._chat, self._body(model, messages, options, False), self._timeouts.inference)
        if not isinstance(answer, dict):
            self._fail(ProviderUnavailable, "answered /api/chat without a JSON object")
        self._check_end(model, answer)
        message = answer.get("message") or {}
        content = message.get("content") or ""
        calls = tuple(
            ToolCall(
                id=str(call.get("id") or ""),
                name=str(call["function"].get("name") or ""),
                arguments=dumps(call["function"].get("arguments") or {}).decode(),
            )
            for call in message.get("tool_calls") or ()
            if isinstance(call, dict) and isinstance(call.get("function"), dict)
        )
        if not content and not calls:
            self._fail(ProviderRefused, f"model '{model}' answered with empty content")
        return ChatResult(
            message=Message(role=message.get("role") or "assistant", content=content, tool_calls=calls),
            finish_reason="tool_calls" if calls and not content else "stop",
            prompt_tokens=int(answer.get("prompt_eval_count") or 0),
            completion_tokens=int(answer.get("eval_count") or 0),
        )

    async def chat_stream(
        self, model: str, messages: Sequence[Message], options: ChatOptions = _DEFAULT
    ) -> AsyncIterator[str]:
        sent = False
        async with aclosing(self._lines(self._chat, self._body(model, messages, options, True))) as lines:
            async for line in lines:
                chunk = self._decode(line)
                if not isinstance(chunk, dict):
                    continue
                if chunk.get("done") or "error" in chunk:
                    self._check_end(model, chunk)
                    if not sent:
                        self._fail(ProviderRefused, f"model '{model}' answered with empty content")
                    async for _ in lines:  # read to the body's end, so the connection is kept for the next call
                        pass
                    return
                piece = (chunk.get("message") or {}).get("content")
                if piece:
                    sent = True
                    yield piece
        self._fail(ProviderUnavailable, f"the stream of model '{model}' ended before it was done")

    async def prompt(self, model: str, system: str, prompt: str, options: ChatOptions = _DEFAULT) -> str:
        body: dict[str, Any] = {"model": model, "prompt": prompt, "system": system, "stream": False, "think": False}
        if opts := _options(options):
            body["options"] = opts
        answer = await self._call("POST", self._generate, body, self._timeouts.inference)
        if not isinstance(answer, dict):
            self._fail(ProviderUnavailable, "answered /api/generate without a JSON object")
        self._check_end(model, answer)
        text = answer.get("response") or ""
        if not text:
            self._fail(ProviderRefused, f"model '{model}' answered with empty content")
        return str(text)

    async def embed(self, model: str, text: str) -> list[float]:
        answer = await self._call("POST", self._embeddings, {"model": model, "prompt": text}, self._timeouts.inference)
        vector = answer.get("embedding") if isinstance(answer, dict) else None
        if not vector:
            self._fail(ProviderRefused, f"model '{model}' answered without an embedding")
        return vector

    async def pull(self, model: str) -> AsyncIterator[PullProgress]:
        body = {"model": model, "name": model, "stream": True}
        async with aclosing(self._lines(self._pull, body)) as lines:
            async for line in lines:
                progress = self._decode(line)
                if not isinstance(progress, dict):
                    continue
                if "error" in progress:
                    self._fail(ProviderRefused, f"pull of '{model}' failed: {progress['error']}")
                status = str(progress.get("status") or "")
                yield PullProgress(
                    status=status,
                    digest=str(progress.get("digest") or ""),
                    total=int(progress.get("total") or 0),
                    completed=int(progress.get("completed") or 0),
                )
                if status == "success":
                    return
        self._fail(ProviderUnavailable, f"the pull of '{model}' ended before it succeeded")

    async def delete(self, model: str) -> None:
        await self._call("DELETE", self._delete, {"model": model, "name": model}, self._timeouts.listing)
