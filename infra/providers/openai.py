"""OpenAI and OpenAI-compatible servers: /models, /chat/completions (plain and SSE-streamed), /embeddings.

An OpenAI backend's base URL ends in ``/v1`` (``https://api.openai.com/v1``) and calls carry ``Authorization:
Bearer <key>``. vLLM is the variant (``vllm=True``): its base URL is the server's root (``/v1`` is added
unless already there), no key, no embeddings, and a prompt asks for at most 2048 tokens unless told
otherwise (old vLLM servers answer 16 tokens when not told).

An answer counts when ``finish_reason`` is ``stop`` (or ``tool_calls`` with tool calls) and it has content
or tool calls; ``length`` is a token limit, ``content_filter`` and anything else a refusal.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from typing import Any

import aiohttp

from chainloom.domain.runtime import PulledModel
from chainloom.infra.providers._http import HttpAdapter, Timeouts
from chainloom.infra.providers.base import (
    ChatOptions,
    ChatResult,
    Endpoint,
    Message,
    ProviderRefused,
    ProviderUnavailable,
    TokenLimit,
    ToolCall,
)

_DEFAULT = ChatOptions()
_VLLM_PROMPT_MAX_TOKENS = 2048


def _message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


class OpenAIClient(HttpAdapter):
    def __init__(
        self, endpoint: Endpoint, session: aiohttp.ClientSession, timeouts: Timeouts, vllm: bool = False
    ) -> None:
        super().__init__(endpoint, session, timeouts)
        self._vllm = vllm
        base = endpoint.base_url.rstrip("/")
        if vllm and not base.endswith("/v1"):
            base += "/v1"
        self._models = base + "/models"
        self._completions = base + "/chat/completions"
        self._embeddings = base + "/embeddings"
        if endpoint.api_key:
            self._headers["Authorization"] = f"Bearer {endpoint.api_key}"

    async def list_models(self) -> list[PulledModel]:
        body = await self._call("GET", self._models, None, self._timeouts.listing)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            self._fail(ProviderUnavailable, "answered /models without a data list")
        return [
            PulledModel(name=str(entry["id"]), model=str(entry["id"]), context_length=int(entry.get("max_model_len") or 0))
            for entry in data
            if isinstance(entry, dict) and entry.get("id")
        ]

    def _body(self, model: str, messages: list[dict[str, Any]], options: ChatOptions, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": messages}
        if options is not _DEFAULT:
            if options.temperature is not None:
                body["temperature"] = options.temperature
            if options.max_tokens is not None:
                body["max_tokens"] = options.max_tokens
            if options.top_p is not None:
                body["top_p"] = options.top_p
            if options.seed is not None:
                body["seed"] = options.seed
            if options.tools:
                body["tools"] = list(options.tools)
        if stream:
            body["stream"] = True
        return body

    def _check_finish(self, model: str, reason: Any, has_calls: bool) -> None:
        if reason == "stop" or (has_calls and reason in ("tool_calls", "function_call")):
            return
        if reason == "length":
            self._fail(TokenLimit, f"model '{model}' reached its token limit (finish_reason length)")
        if reason == "content_filter":
            self._fail(ProviderRefused, f"model '{model}': content filtered (finish_reason content_filter)")
        self._fail(ProviderRefused, f"model '{model}' stopped unexpectedly (finish_reason {reason or 'missing'})")

    async def _complete(self, model: str, body: dict[str, Any]) -> ChatResult:
        answer = await self._call("POST", self._completions, body, self._timeouts.inference)
        try:
            choice = answer["choices"][0]
            message = choice["message"]
        except (TypeError, KeyError, IndexError):
            if isinstance(answer, dict) and "error" in answer:
                self._fail(ProviderRefused, f"model '{model}' failed: {answer['error']}")
            self._fail(ProviderUnavailable, f"model '{model}': an answer without choices")
        content = message.get("content") or ""
        calls = tuple(
            ToolCall(
                id=str(call.get("id") or ""),
                name=str(call["function"].get("name") or ""),
                arguments=str(call["function"].get("arguments") or "{}"),
            )
            for call in message.get("tool_calls") or ()
            if isinstance(call, dict) and isinstance(call.get("function"), dict)
        )
        reason = choice.get("finish_reason")
        self._check_finish(model, reason, bool(calls))
        if not content and not calls:
            refusal = message.get("refusal")
            self._fail(ProviderRefused, f"model '{model}' refused: {refusal}" if refusal else f"model '{model}' answered with empty content")
        usage = answer.get("usage") or {}
        return ChatResult(
            message=Message(role=message.get("role") or "assistant", content=content, tool_calls=calls),
            finish_reason=reason,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )

    async def chat(self, model: str, messages: Sequence[Message], options: ChatOptions = _DEFAULT) -> ChatResult:
        return await self._complete(model, self._body(model, [_message(m) for m in messages], options, False))

    async def chat_stream(
        self, model: str, messages: Sequence[Message], options: ChatOptions = _DEFAULT
    ) -> AsyncIterator[str]:
        body = self._body(model, [_message(m) for m in messages], options, True)
        sent = False
        reason: Any = None
        async with aclosing(self._sse(self._completions, body)) as events:
            async for event in events:
                if not isinstance(event, dict):
                    continue
                if "error" in event:  # vLLM (and OpenAI) report a failure met mid-stream so
                    error = event["error"]
                    text = error.get("message") if isinstance(error, dict) else error
                    self._fail(ProviderRefused, f"model '{model}' failed while streaming: {text}")
                choices = event.get("choices")
                if not choices:
                    continue  # e.g. the closing usage chunk
                choice = choices[0]
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    sent = True
                    yield piece
                if choice.get("finish_reason"):
                    reason = choice["finish_reason"]
        if reason is None:  # some compatible servers never say; a cut connection raised above already
            if sent:
                return
            self._fail(ProviderUnavailable, f"the stream of model '{model}' ended without an answer")
        self._check_finish(model, reason, False)
        if not sent:
            self._fail(ProviderRefused, f"model '{model}' answered with empty content")

    async def prompt(self, model: str, system: str, prompt: str, options: ChatOptions = _DEFAULT) -> str:
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": prompt})
        body = self._body(model, messages, options, False)
        if self._vllm and "max_tokens" not in body:
            body["max_tokens"] = _VLLM_PROMPT_MAX_TOKENS
        result = await self._complete(model, body)
        if not result.message.content:
            self._fail(ProviderRefused, f"model '{model}' answered with empty content")
        return result.message.content

    async def embed(self, model: str, text: str) -> list[float]:
        if self._vllm:
            self.unsupported("embeddings")
        body = {"model": model, "input": text, "encoding_format": "float"}
        answer = await self._call("POST", self._embeddings, body, self._timeouts.inference)
        try:
            vector = answer["data"][0]["embedding"]
        except (TypeError, KeyError, IndexError):
            vector = None
        if not vector:
            self._fail(ProviderRefused, f"model '{model}' answered without an embedding")
        return vector
