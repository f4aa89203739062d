"""Gemini (Generative Language API, v1beta): models, :generateContent, :streamGenerateContent?alt=sse,
:embedContent, with the key in ``X-Goog-Api-Key``.

Model names may come with or without their ``models/`` prefix; URLs are built without it. The first
system message becomes ``system_instruction``, the others are dropped; ``assistant`` is ``model``.
OpenAI-shaped tools become ``functionDeclarations`` and ``functionCall`` parts come back as tool calls.
An answer counts when ``finishReason`` is ``STOP`` (or absent) and it has text or calls; ``MAX_TOKENS`` is
a token limit; a blocked prompt and any other reason (``SAFETY`` …) a refusal.
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
    TokenLimit,
    ToolCall,
)

_DEFAULT = ChatOptions()
_PAGES = 20  # at most this many pages of 1000 models: a guard against a server that never ends


def _tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    declarations = []
    for tool in tools:
        function = tool.get("function", tool)
        declaration = {k: function[k] for k in ("name", "description", "parameters") if k in function}
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def _arguments(text: str) -> Any:
    try:
        return loads(text or "{}")
    except ValueError:
        return {}


class GeminiClient(HttpAdapter):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._base = self.endpoint.base_url.rstrip("/") + "/v1beta/"
        if self.endpoint.api_key:
            self._headers["X-Goog-Api-Key"] = self.endpoint.api_key
        self._stream_headers = {**self._headers, "Accept": "text/event-stream"}

    def _url(self, model: str, method: str) -> str:
        return f"{self._base}models/{model.removeprefix('models/')}:{method}"

    async def list_models(self) -> list[PulledModel]:
        models: list[PulledModel] = []
        token = ""
        for _ in range(_PAGES):
            url = self._base + "models?pageSize=1000" + (f"&pageToken={token}" if token else "")
            body = await self._call("GET", url, None, self._timeouts.listing)
            entries = body.get("models") if isinstance(body, dict) else None
            if not isinstance(entries, list):
                self._fail(ProviderUnavailable, "answered /v1beta/models without a models list")
            for entry in entries:
                name = str(entry.get("name") or "")
                if not name:
                    continue
                methods = entry.get("supportedGenerationMethods") or ()
                generates = "generateContent" in methods
                models.append(
                    PulledModel(
                        name=name,
                        model=name,
                        context_length=int(entry.get("inputTokenLimit") or 0),
                        can_chat=generates,
                        can_prompt=generates,
                        can_stream=generates,
                        can_embed="embedContent" in methods,
                    )
                )
            token = str(body.get("nextPageToken") or "")
            if not token:
                break
        return models

    def _body(self, messages: Sequence[Message], options: ChatOptions) -> dict[str, Any]:
        system = ""
        contents = []
        for m in messages:
            if m.role == "system":
                system = system or m.content
                continue
            role = "model" if m.role == "assistant" else "user"
            parts: list[dict[str, Any]] = [{"text": m.content}] if m.content else []
            parts += [{"functionCall": {"name": c.name, "args": _arguments(c.arguments)}} for c in m.tool_calls]
            contents.append({"role": role, "parts": parts or [{"text": ""}]})
        config: dict[str, Any] = {}
        if options is not _DEFAULT:
            if options.temperature is not None:
                config["temperature"] = options.temperature
            if options.top_p is not None:
                config["topP"] = options.top_p
            if options.max_tokens is not None:
                config["maxOutputTokens"] = options.max_tokens
            if options.seed is not None:
                config["seed"] = options.seed
        body: dict[str, Any] = {"contents": contents, "generationConfig": config}
        if system:
            body["system_instruction"] = {"parts": [{"text": system}]}
        if options.tools:
            body["tools"] = _tools(options.tools)
        return body

    def _candidate(self, model: str, answer: Any) -> tuple[str, tuple[ToolCall, ...], Any]:
        """The text and calls of an answer's first candidate, and its finish reason (checked)."""
        if not isinstance(answer, dict):
            self._fail(ProviderUnavailable, f"model '{model}': an answer that is not a JSON object")
        blocked = (answer.get("promptFeedback") or {}).get("blockReason")
        if blocked:
            self._fail(ProviderRefused, f"model '{model}' blocked the prompt (blockReason {blocked})")
        candidates = answer.get("candidates")
        if not candidates:
            return "", (), None
        candidate = candidates[0]
        reason = candidate.get("finishReason")
        if reason == "MAX_TOKENS":
            self._fail(TokenLimit, f"model '{model}' reached its token limit (finishReason MAX_TOKENS)")
        if reason not in (None, "STOP", "FINISH_REASON_UNSPECIFIED"):
            self._fail(ProviderRefused, f"model '{model}' stopped its answer (finishReason {reason})")
        text = ""
        calls: list[ToolCall] = []
        for part in (candidate.get("content") or {}).get("parts") or ():
            if part.get("thought"):
                continue
            if "text" in part:
                text += part["text"]
            elif "functionCall" in part:
                call = part["functionCall"]
                calls.append(ToolCall(id="", name=str(call.get("name") or ""), arguments=dumps(call.get("args") or {}).decode()))
        return text, tuple(calls), reason

    async def chat(self, model: str, messages: Sequence[Message], options: ChatOptions = _DEFAULT) -> ChatResult:
        answer = await self._call("POST", self._url(model, "generateContent"), self._body(messages, options), self._timeouts.inference)
        text, calls, _ = self._candidate(model, answer)
        if not text and not calls:
            self._fail(ProviderRefused, f"model '{model}' answered with empty content")
        usage = answer.get("usageMetadata") or {}
        return ChatResult(
            message=Message(role="assistant", content=text, tool_calls=calls),
            finish_reason="tool_calls" if calls and not text else "stop",
            prompt_tokens=int(usage.get("promptTokenCount") or 0),
            completion_tokens=int(usage.get("candidatesTokenCount") or 0),
        )

    async def chat_stream(
        self, model: str, messages: Sequence[Message], options: ChatOptions = _DEFAULT
    ) -> AsyncIterator[str]:
        url = self._url(model, "streamGenerateContent") + "?alt=sse"
        sent = False
        async with aclosing(self._sse(url, self._body(messages, options), self._stream_headers)) as events:
            async for event in events:
                text, _, _ = self._candidate(model, event)
                if text:
                    sent = True
                    yield text
        if not sent:
            self._fail(ProviderRefused, f"model '{model}' answered with empty content")

    async def prompt(self, model: str, system: str, prompt: str, options: ChatOptions = _DEFAULT) -> str:
        messages = [Message("system", system), Message("user", prompt)] if system else [Message("user", prompt)]
        text = (await self.chat(model, messages, options)).message.content
        if not text:
            self._fail(ProviderRefused, f"model '{model}' answered with empty content")
        return text

    async def embed(self, model: str, text: str) -> list[float]:
        name = "models/" + model.removeprefix("models/")
        body = {"model": name, "content": {"parts": [{"text": text}]}}
        answer = await self._call("POST", self._url(model, "embedContent"), body, self._timeouts.inference)
        vector = (answer.get("embedding") or {}).get("values") if isinstance(answer, dict) else None
        if not vector:
            self._fail(ProviderRefused, f"model '{model}' answered without an embedding")
        return vector
