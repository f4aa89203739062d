"""Fake LLM providers for tests: aiohttp servers on 127.0.0.1 (random port) speaking the real wire protocols.

    async with FakeOllama() as ollama:
        ollama.add_model("phi3:3.8b", size=123)
        ...Endpoint("ollama", ollama.url)...

Every fake answers deterministically and records what it received:

* ``reply``: the answer's text; a list of strings is streamed as those chunks (joined when not streamed).
* ``embedding``: the vector every embedding call returns; ``embed_text``: when set, ``embed_text(text)`` is
  returned instead (``word_vector``: texts that share words are close).
* ``answer``: when set, ``answer(prompt)`` is the text of a prompt's or chat's answer instead of ``reply`` (None:
  ``reply`` after all)
  (``document_answer``: what the indexing and search prompts want). ``use_document_models()`` sets both.
* ``fail_with``: an HTTP status (e.g. 500) every call is answered with, in the provider's error body; None: off.
* ``delay``: seconds to wait before answering (a slow backend); ``chunk_delay``: between streamed chunks.
* ``tool_calls``: ``[{"name": ..., "arguments": {...}}]`` answered instead of text when the request has tools.
* ``requests``: ``(method, path, json body or None)`` of every call, in order.

Models the fakes do not hold are refused as the providers do (404), so add them first.

Run one on its own (the benchmarks do): ``python -m tests.fakes.llm ollama|openai|gemini [api key]`` prints
its URL on the first line, then serves until killed. ``python -m tests.fakes.llm documents [model …]`` is an
Ollama answering as the document models (``use_document_models``) and holding the models named (default:
the default task and embedding models).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

Body = dict[str, Any]
BODY = web.RequestKey("body", dict)  # the request's JSON body ({} when none)

# -- deterministic stand-ins for the document models (indexing and search) ----------------------------------

WORD_DIMS = 64
_WORD = re.compile(r"[a-z0-9]+")
_QUESTION_WORDS = frozenset(
    "what who whom whose where when why how which is are was were do does did can could should would will".split()
)
_STOP_WORDS = _QUESTION_WORDS | frozenset("a an the of in on at to for and or about with by from me my i".split())


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def word_vector(text: str, dims: int = WORD_DIMS) -> list[float]:
    """A hashed bag of words, normalised: texts that share words are close (L2), texts that share none far."""
    vector = [0.0] * dims
    for word in words(text):
        vector[int(hashlib.md5(word.encode()).hexdigest(), 16) % dims] += 1.0
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    return [value / norm for value in vector]


def _after(prompt: str, marker: str) -> str:
    return prompt.rsplit(marker, 1)[1].strip() if marker in prompt else prompt


def document_answer(prompt: str) -> str:
    """The task model as indexing and search use it, recognised by what their prompts ask (the text to work on
    follows the last ``Text:`` or ``Question:`` line):

    * keywords (the prompt says "comma-separated"): the text's first six distinct words of four letters or more;
    * whether a text is a question ("yes or no"): ``yes`` when it ends with ``?`` or starts with a question word;
    * a question rewritten as a search query ("search query"): its words but question and stop words."""
    lowered = prompt.lower()
    if "comma-separated" in lowered:
        found = list(dict.fromkeys(word for word in words(_after(prompt, "Text:")) if len(word) >= 4))
        return ", ".join(found[:6]) or "none"
    if "yes or no" in lowered:
        text = _after(prompt, "Text:")
        first = (words(text) or [""])[0]
        return "yes" if text.rstrip().endswith("?") or first in _QUESTION_WORDS else "no"
    if "search query" in lowered:
        return " ".join(word for word in words(_after(prompt, "Question:")) if word not in _STOP_WORDS)
    return "hello"


class _Fake:
    """The server plumbing shared by the fakes: start/stop, recording, failing, delaying."""

    def __init__(self) -> None:
        self.url = ""
        self.reply: str | list[str] = "hello"
        self.embedding: list[float] = [0.1, 0.2, 0.3]
        self.embed_text: Callable[[str], list[float]] | None = None
        self.answer: Callable[[str], str | None] | None = None
        self.fail_with: int | None = None
        self.delay = 0.0
        self.chunk_delay = 0.0
        self.tool_calls: list[dict[str, Any]] | None = None
        self.requests: list[tuple[str, str, Body | None]] = []
        self._runner: web.AppRunner | None = None

    # -- lifecycle
    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)  # no wait for slow answers
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = self._url(f"http://127.0.0.1:{port}")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _url(self, root: str) -> str:
        return root

    def _routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # -- shared behaviour
    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        body: Body | None = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                return self._error(400, "invalid JSON body")
        self.requests.append((request.method, request.path, body))
        request[BODY] = body if isinstance(body, dict) else {}
        if self.delay:
            await asyncio.sleep(self.delay)
        refused = self._check_auth(request)
        if refused is not None:
            return refused
        if self.fail_with is not None:
            return self._error(self.fail_with, "fake failure")
        return await handler(request)

    def _check_auth(self, request: web.Request) -> web.Response | None:
        return None

    def _error(self, status: int, message: str) -> web.Response:
        raise NotImplementedError

    def use_document_models(self, dims: int = WORD_DIMS) -> None:
        """Answer as the document models would: embeddings by words, keywords and questions by ``document_answer``."""
        self.embed_text = lambda text: word_vector(text, dims)
        self.answer = document_answer

    def vector_of(self, text: str) -> list[float]:
        return self.embedding if self.embed_text is None else self.embed_text(text)

    def pieces(self, prompt: str | None = None) -> list[str]:
        if self.answer is not None and prompt is not None and (answered := self.answer(prompt)) is not None:
            return [answered]
        return [self.reply] if isinstance(self.reply, str) else list(self.reply)

    def text(self, prompt: str | None = None) -> str:
        return "".join(self.pieces(prompt))

    async def _stream(self, request: web.Request, content_type: str, frames: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for frame in frames:
            await response.write(frame)
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await response.write_eof()
        return response


def _ndjson(obj: Body) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _sse(obj: Body | str) -> bytes:
    return b"data: " + (obj if isinstance(obj, str) else json.dumps(obj)).encode() + b"\n\n"


def _tokens(text: str) -> int:
    return len(text.split())


def _last_user(messages: Any) -> str | None:
    """The last user message's text (what a single-turn prompt sent as a chat asks), or None."""
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return None


class FakeOllama(_Fake):
    """Ollama: /api/tags, /api/pull, /api/delete, /api/generate, /api/chat, /api/embeddings, /api/embed."""

    def __init__(self) -> None:
        super().__init__()
        self.models: dict[str, Body] = {}  # name -> /api/tags entry
        self.pullable: dict[str, int] = {}  # name -> size: what /api/pull can fetch
        self.pull_steps = 3
        self.pull_step_delay = 0.0
        self.done_reason = "stop"

    def add_model(self, name: str, size: int = 1000) -> Body:
        digest = hashlib.sha256(name.encode()).hexdigest()
        self.models[name] = entry = {
            "name": name,
            "model": name,
            "modified_at": "2026-01-01T00:00:00.000000000Z",
            "size": size,
            "digest": digest,
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "3.8B",
                "quantization_level": "Q4_0",
            },
        }
        return entry

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/api/tags", self._tags)
        app.router.add_post("/api/pull", self._pull)
        app.router.add_delete("/api/delete", self._delete)
        app.router.add_post("/api/generate", self._generate)
        app.router.add_post("/api/chat", self._chat)
        app.router.add_post("/api/embeddings", self._embeddings)
        app.router.add_post("/api/embed", self._embed)

    def _error(self, status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    def _model(self, body: Body) -> str:
        return str(body.get("model") or body.get("name") or "")

    def _missing(self, name: str) -> web.Response | None:
        if name in self.models:
            return None
        return self._error(404, f'model "{name}" not found, try pulling it first')

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": list(self.models.values())})

    async def _pull(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        name = self._model(body)
        if name not in self.models and name not in self.pullable:
            lines = [{"status": "pulling manifest"}, {"error": "pull model manifest: file does not exist"}]
            if body.get("stream", True) is False:
                return self._error(500, lines[-1]["error"])
            return await self._stream(request, "application/x-ndjson", [_ndjson(line) for line in lines])
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        streamed = body.get("stream", True) is not False
        if name not in self.models:
            size = self.pullable[name]
            digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
            lines = [{"status": "pulling manifest"}]
            for step in range(1, self.pull_steps + 1):
                completed = size * step // self.pull_steps
                lines.append({"status": f"pulling {digest[7:19]}", "digest": digest, "total": size, "completed": completed})
            lines += [{"status": "verifying sha256 digest"}, {"status": "writing manifest"}]
            for line in lines:
                if streamed:
                    await response.write(_ndjson(line))
                if self.pull_step_delay:
                    await asyncio.sleep(self.pull_step_delay)
            self.add_model(name, size)
        await response.write(_ndjson({"status": "success"}))
        await response.write_eof()
        return response

    async def _delete(self, request: web.Request) -> web.Response:
        name = self._model(request[BODY])
        if self.models.pop(name, None) is None:
            return self._error(404, f"model '{name}' not found")
        return web.Response(status=200)

    def _final(self, name: str, text_tokens: int, prompt_tokens: int) -> Body:
        return {
            "model": name,
            "created_at": "2026-01-01T00:00:00Z",
            "done": True,
            "done_reason": self.done_reason,
            "total_duration": 1000,
            "prompt_eval_count": prompt_tokens,
            "eval_count": text_tokens,
        }

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        name = self._model(body)
        if (missing := self._missing(name)) is not None:
            return missing
        prompt = str(body.get("prompt", ""))
        prompt_tokens = _tokens(prompt) + _tokens(str(body.get("system", "")))
        final = self._final(name, _tokens(self.text(prompt)), prompt_tokens)
        if body.get("stream", True) is False:
            return web.json_response({**final, "response": self.text(prompt)})
        frames = [
            _ndjson({"model": name, "created_at": final["created_at"], "response": piece, "done": False})
            for piece in self.pieces(prompt)
        ]
        return await self._stream(request, "application/x-ndjson", frames + [_ndjson({**final, "response": ""})])

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        name = self._model(body)
        if (missing := self._missing(name)) is not None:
            return missing
        prompt_tokens = sum(_tokens(str(m.get("content", ""))) for m in body.get("messages", []))
        prompt = _last_user(body.get("messages"))
        final = self._final(name, _tokens(self.text(prompt)), prompt_tokens)
        if body.get("tools") and self.tool_calls:
            message: Body = {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"function": {"name": c["name"], "arguments": c["arguments"]}} for c in self.tool_calls],
            }
        else:
            message = {"role": "assistant", "content": self.text(prompt)}
        if body.get("stream", True) is False:
            return web.json_response({**final, "message": message})
        if "tool_calls" in message:
            frames = [_ndjson({"model": name, "created_at": final["created_at"], "message": message, "done": False})]
        else:
            frames = [
                _ndjson({"model": name, "created_at": final["created_at"], "message": {"role": "assistant", "content": p}, "done": False})
                for p in self.pieces(prompt)
            ]
        last = {**final, "message": {"role": "assistant", "content": ""}}
        return await self._stream(request, "application/x-ndjson", frames + [_ndjson(last)])

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = request[BODY]
        if (missing := self._missing(self._model(body))) is not None:
            return missing
        return web.json_response({"embedding": self.vector_of(str(body.get("prompt", "")))})

    async def _embed(self, request: web.Request) -> web.Response:
        body = request[BODY]
        name = self._model(body)
        if (missing := self._missing(name)) is not None:
            return missing
        inputs = body.get("input", "")
        texts = inputs if isinstance(inputs, list) else [inputs]
        return web.json_response({"model": name, "embeddings": [self.vector_of(str(text)) for text in texts]})


class FakeOpenAI(_Fake):
    """OpenAI (and, with ``api_key=None``, vLLM): /v1/models, /v1/chat/completions, /v1/embeddings.

    ``url`` ends in ``/v1`` (what an OpenAI backend's base URL is); ``root`` is the server's root (a vLLM
    backend's base URL). ``finish_reason`` is what chat answers end with; ``stream_error`` (vLLM) makes a
    stream end with a chunk carrying a top-level ``error`` after its first chunk.
    """

    def __init__(self, api_key: str | None = "sk-test", models: list[str] | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.models: list[str] = list(models) if models is not None else ["gpt-4o-mini", "text-embedding-3-small"]
        self.finish_reason = "stop"
        self.stream_error: str | None = None
        self.root = ""

    def _url(self, root: str) -> str:
        self.root = root
        return root + "/v1"

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)

    def _error(self, status: int, message: str, type_: str = "", code: str | None = None) -> web.Response:
        if not type_:
            type_ = "server_error" if status >= 500 else "invalid_request_error"
        error = {"message": message, "type": type_, "param": None, "code": code}
        return web.json_response({"error": error}, status=status)

    def _check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        header = request.headers.get("Authorization", "")
        if not header:
            return self._error(401, "You didn't provide an API key. You need to provide your API key in an "
                               "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        given = header.removeprefix("Bearer ").strip()
        if given != self.api_key:
            return self._error(401, f"Incorrect API key provided: {given}. You can find your API key at "
                               "https://platform.openai.com/account/api-keys.", code="invalid_api_key")
        return None

    def _missing(self, name: str) -> web.Response | None:
        if name in self.models:
            return None
        return self._error(404, f"The model `{name}` does not exist or you do not have access to it.",
                           code="model_not_found")

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "system"} for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = request[BODY]
        name = str(body.get("model", ""))
        if (missing := self._missing(name)) is not None:
            return missing
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            return self._error(400, "'messages' must contain at least one message")
        prompt_tokens = sum(_tokens(str(m.get("content") or "")) for m in body["messages"])
        prompt = _last_user(body["messages"])
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": _tokens(self.text(prompt)),
                 "total_tokens": prompt_tokens + _tokens(self.text(prompt))}
        head = {"id": "chatcmpl-fake", "created": int(time.time()), "model": name}
        tool_calls = None
        finish = self.finish_reason
        if body.get("tools") and self.tool_calls:
            tool_calls = [
                {"id": f"call_{i}", "type": "function",
                 "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
                for i, c in enumerate(self.tool_calls)
            ]
            finish = "tool_calls"
        if not body.get("stream"):
            message: Body = {"role": "assistant", "content": None if tool_calls else self.text(prompt), "refusal": None}
            if tool_calls:
                message["tool_calls"] = tool_calls
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            return web.json_response({**head, "object": "chat.completion", "choices": [choice], "usage": usage})

        def chunk(delta: Body, finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return _sse({**head, "object": "chat.completion.chunk", "choices": [choice]})

        frames = [chunk({"role": "assistant", "content": ""})]
        if tool_calls:
            frames.append(chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(tool_calls)]}))
        else:
            frames += [chunk({"content": piece}) for piece in self.pieces(prompt)]
        if self.stream_error is not None:
            frames.insert(2, _sse({"error": {"object": "error", "message": self.stream_error,
                                             "type": "BadRequestError", "code": 400}}))
            del frames[3:]
        else:
            frames.append(chunk({}, finish))
        frames.append(_sse("[DONE]"))
        return await self._stream(request, "text/event-stream", frames)

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = request[BODY]
        name = str(body.get("model", ""))
        if (missing := self._missing(name)) is not None:
            return missing
        inputs = body.get("input", "")
        inputs = inputs if isinstance(inputs, list) else [inputs]
        data = [{"object": "embedding", "index": i, "embedding": self.vector_of(str(text))} for i, text in enumerate(inputs)]
        tokens = sum(_tokens(str(t)) for t in inputs)
        return web.json_response({"object": "list", "data": data, "model": name,
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


class FakeGemini(_Fake):
    """Gemini: /v1beta/models, /v1beta/models/{name}, :generateContent, :streamGenerateContent?alt=sse,
    :embedContent; the key in ``X-Goog-Api-Key``.

    ``models`` maps a name (without ``models/``) to ``{inputTokenLimit, supportedGenerationMethods}``;
    ``finish_reason`` ("STOP", "MAX_TOKENS", "SAFETY" …) ends every answer; ``block_reason`` (e.g. "SAFETY")
    answers with a blocked prompt instead.
    """

    def __init__(self, api_key: str = "g-test", models: dict[str, Body] | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.models: dict[str, Body] = dict(models) if models is not None else {
            "gemini-1.5-flash": {"inputTokenLimit": 1048576, "supportedGenerationMethods": ["generateContent", "countTokens"]},
            "text-embedding-004": {"inputTokenLimit": 2048, "supportedGenerationMethods": ["embedContent"]},
        }
        self.finish_reason = "STOP"
        self.block_reason: str | None = None

    def _routes(self, app: web.Application) -> None:
        app.router.add_get("/v1beta/models", self._list)
        app.router.add_get("/v1beta/models/{name}", self._info)
        app.router.add_post("/v1beta/models/{call}", self._call)

    _STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
               429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}

    def _error(self, status: int, message: str) -> web.Response:
        error = {"code": status, "message": message, "status": self._STATUS.get(status, "UNKNOWN")}
        return web.json_response({"error": error}, status=status)

    def _check_auth(self, request: web.Request) -> web.Response | None:
        given = request.headers.get("X-Goog-Api-Key") or request.query.get("key", "")
        if not given:
            return self._error(403, "Method doesn't allow unregistered callers (callers without established "
                               "identity). Please use API Key or other form of API consumer identity to call this API.")
        if given != self.api_key:
            return self._error(400, "API key not valid. Please pass a valid API key.")
        return None

    def _entry(self, name: str) -> Body:
        info = self.models[name]
        return {
            "name": f"models/{name}",
            "version": "001",
            "displayName": name,
            "description": f"fake {name}",
            "inputTokenLimit": info.get("inputTokenLimit", 0),
            "outputTokenLimit": info.get("outputTokenLimit", 8192),
            "supportedGenerationMethods": list(info.get("supportedGenerationMethods", [])),
        }

    def _known(self, name: str) -> str | None:
        name = name.removeprefix("models/")
        return name if name in self.models else None

    def _not_found(self, name: str) -> web.Response:
        return self._error(404, f"models/{name} is not found for API version v1beta, or is not supported for "
                           "generateContent. Call ListModels to see the list of available models and their "
                           "supported methods.")

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [self._entry(name) for name in self.models]})

    async def _info(self, request: web.Request) -> web.Response:
        name = self._known(request.match_info["name"])
        if name is None:
            return self._not_found(request.match_info["name"])
        return web.json_response(self._entry(name))

    async def _call(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        name = self._known(model)
        if name is None:
            return self._not_found(model)
        if method == "embedContent":
            parts = (request[BODY].get("content") or {}).get("parts") or [{}]
            return web.json_response({"embedding": {"values": self.vector_of(str(parts[0].get("text", "")))}})
        if method not in ("generateContent", "streamGenerateContent"):
            return self._error(404, f"method {method} not found")
        body = request[BODY]
        if not body.get("contents"):
            return self._error(400, "* GenerateContentRequest.contents: contents is not specified")
        prompt_tokens = sum(_tokens(str(p.get("text", ""))) for c in body["contents"] for p in c.get("parts", []))
        if self.block_reason:
            answers: list[Body] = [{"promptFeedback": {"blockReason": self.block_reason},
                                    "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}}]
        else:
            if body.get("tools") and self.tool_calls:
                parts = [[{"functionCall": {"name": c["name"], "args": c["arguments"]}} for c in self.tool_calls]]
            else:
                pieces = self.pieces() if method == "streamGenerateContent" else [self.text()]
                parts = [[{"text": piece}] for piece in pieces]
            answers = [
                {"candidates": [{"content": {"parts": p, "role": "model"}, "index": 0}], "modelVersion": name}
                for p in parts
            ]
            answers[-1]["candidates"][0]["finishReason"] = self.finish_reason
            answers[-1]["usageMetadata"] = {"promptTokenCount": prompt_tokens,
                                            "candidatesTokenCount": _tokens(self.text()),
                                            "totalTokenCount": prompt_tokens + _tokens(self.text())}
        if method == "generateContent":
            return web.json_response(answers[0])
        return await self._stream(request, "text/event-stream", [_sse(a).replace(b"\n\n", b"\r\n\r\n") for a in answers])


FAKES = {"ollama": FakeOllama, "openai": FakeOpenAI, "gemini": FakeGemini}


async def _serve_forever(kind: str, api_key: str | None) -> None:
    if kind == "documents":
        fake: _Fake = FakeOllama()
        fake.use_document_models()
        from chainloom.infra.settings import Settings

        defaults = Settings.model_fields
        for name in sys.argv[2:] or [defaults["task_model"].default, defaults["embed_model"].default]:
            fake.add_model(name)
    else:
        fake = FAKES[kind](api_key) if kind != "ollama" and api_key is not None else FAKES[kind]()
    if isinstance(fake, FakeOllama) and not fake.models:
        fake.add_model("phi3:3.8b")
    async with fake:
        print(fake.url, flush=True)
        fake.requests = _Discard()  # a long run must not grow without end
        await asyncio.Event().wait()


class _Discard(list):
    def append(self, item: object) -> None:
        pass


if __name__ == "__main__":
    asyncio.run(_serve_forever(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
