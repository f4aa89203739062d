"""The task-chain engine: runs a chain definition on an input (notes §4–§7), and records the run on the log.

``TaskEngine.run`` walks the chain from its first task: each visit takes its input (the previous
output, or ``input_var``), renders ``prompt_template`` once, runs the handler in 1 + ``retry_on_failure``
attempts (each under ``timeout``, each captured in the state), composes, and follows the transition
(``on_failure`` when every attempt failed). LLM handlers go through ``ExecutionService`` (routing and
fail-over over the listed models — the reference picks one at random and never retries); hooks through
the ``HookRunner`` (``commands.hooks``). A run stops after ``step_limit`` task visits
(``CHAINLOOM_TASK_STEP_LIMIT``, default 1000) with the state captured so far. A step whose transition
took a branch marked ``alert_on_match`` carries the message as ``alert`` (the activity read model's alerts).

Token counts are an estimate — there is no tokenizer dependency: ``ceil(utf-8 bytes / 4)``, so any
non-empty text counts at least 1 (OpenAI clients check that usage is positive).

The run is recorded as a ``task_run`` aggregate (``domain.task_runs``): ``started`` before the first
task, the steps in batches (every ``STEP_BATCH`` steps or ``FLUSH_SECONDS`` of a long run, and at the
end) with ``finished`` or ``failed``. Neither the run nor its answer waits for the log: the appends of
a run are made in the background, in order (the log writer's thread does the work), and announced to
the read models rather than waited for; ``drain`` waits for them (at shutdown, before the log writer
closes). An append that fails is logged; the run's answer stands.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain.errors import BadRequest, DomainError, Unavailable, Unprocessable, UpstreamRefused
from chainloom.domain.task_runs import TaskRun
from chainloom.domain.taskchains import Branch, ChainDefinition, TaskDefinition, parse_duration
from chainloom.domain.taskengine import ChainFailed, TaskError
from chainloom.domain.taskengine.compose import compose as compose_values
from chainloom.domain.taskengine.parsing import number_reply, parse_key_value, parse_number, parse_range, parse_transition
from chainloom.domain.taskengine.state import CapturedStateUnit, debug_text, go_json
from chainloom.domain.taskengine.templates import TemplateError, render
from chainloom.domain.taskengine.transitions import ends, matches, next_task
from chainloom.infra.logwriter import without_fence
from chainloom.domain.taskengine.values import (
    ANY,
    BOOL,
    CHAT_HISTORY,
    FLOAT,
    INT,
    JSON,
    OPENAI_CHAT,
    OPENAI_CHAT_RESPONSE,
    STRING,
    VECTOR,
    chat_history,
    message,
    prompt_text,
)
from chainloom.infra.providers.base import ChatOptions, Message, ToolCall

logger = logging.getLogger(__name__)

DEFAULT_STEP_LIMIT = 1000
STEP_BATCH = 64  # steps recorded per append in a long run
FLUSH_SECONDS = 1.0  # … or after this long since the last append
# A run still going after this long has its start appended on its own; a shorter one (most) records its
# start, steps and end in one append.
STARTED_ALONE_AFTER = 0.05


def estimate_tokens(text: str) -> int:
    """Token count estimate: ceil(utf-8 bytes / 4); > 0 for non-empty text."""
    if not text:
        return 0
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / 4)


class Hooks(Protocol):
    """``commands.hooks.HookRunner``."""

    async def call(self, hook_name: str, tool_name: str, args: dict[str, Any]) -> tuple[Any, str]: ...

    async def tools(self, hook_name: str) -> list[dict]: ...


class Execution(Protocol):
    """``commands.execution.ExecutionService``."""

    async def generate(
        self,
        system: str,
        prompt: str,
        *,
        model_names: Sequence[str] = (),
        provider_types: Sequence[str] = (),
        temperature: float | None = None,
        capability: str = "prompt",
        label: str = "prompt execution failed",
    ) -> str: ...

    async def embed(self, text: str, model_name: str | None = None, provider_type: str | None = None) -> list[float]: ...

    async def chat(self, messages: Sequence[Message], options: ChatOptions = ChatOptions(), *, model_names: Sequence[str] = (), provider_types: Sequence[str] = (), min_context: int = 0) -> Any: ...

    def chat_stream(self, messages: Sequence[Message], options: ChatOptions = ChatOptions(), *, model_names: Sequence[str] = (), provider_types: Sequence[str] = (), min_context: int = 0) -> Any: ...


@dataclass(frozen=True)
class RunResult:
    run_id: str
    output: Any
    output_type: str
    state: list[dict[str, Any]]


class _Failed(Exception):
    """A handler failed: the cause, and what the attempt returned (the on_failure target's default input)."""

    def __init__(
        self, cause: str, output: Any = None, output_type: str = ANY, transition: str = "", *, upstream: DomainError | None = None
    ) -> None:
        super().__init__(cause)
        self.cause = cause
        self.output = output
        self.output_type = output_type
        self.transition = transition
        # An LLM backend or hook that was unavailable or refused: what the run's failure answers as.
        self.upstream = upstream if isinstance(upstream, (Unavailable, UpstreamRefused)) and not isinstance(upstream, Unprocessable) else None


# -- the log ------------------------------------------------------------------------------------------------


class TaskRunRecorder:
    """Appends a run's events (announced, not waited for by read models)."""

    def __init__(self, runner: CommandRunner) -> None:
        self._runner = runner

    async def started(self, run_id: str, chain_id: str, input_type: str, step_limit: int, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            return Decision(None, [TaskRun.start(run_id, chain_id, input_type, step_limit)])

        await self._runner.run(decide, ctx)

    async def record(
        self,
        run_id: str,
        steps: Sequence[tuple[dict[str, Any], Any]],
        end: tuple[str, Any, Any] | None,
        ctx: CommandContext,
        start: tuple[str, str, int] | None = None,
    ) -> None:
        """Record ``steps`` (state unit, handler output), then ``end``: ("finished", type, output) or
        ("failed", error, None); first the run's start ``(chain id, input type, step limit)`` when given."""

        def decide(log: Aggregates) -> Decision[None]:
            if start is not None:
                run: TaskRun | None = TaskRun.start(run_id, *start)
            else:
                run = TaskRun.resume(run_id, log.last_event(TaskRun, run_id))
            if run is None:
                return Decision(None, [])
            for unit, output in steps:
                run.record_step(unit, output)
            if end is not None:
                if end[0] == "finished":
                    run.finish(end[1], end[2])
                else:
                    run.fail(end[1])
            return Decision(None, [run])

        await self._runner.run(decide, ctx)


class _NoRecorder:
    async def started(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def record(self, *args: Any, **kwargs: Any) -> None:
        return None


# -- the engine -------------------------------------------------------------------------------------------------


class TaskEngine:
    def __init__(
        self,
        execution: Execution,
        hooks: Hooks | None = None,
        recorder: TaskRunRecorder | None = None,
        *,
        step_limit: int = DEFAULT_STEP_LIMIT,
        on_run_end: Callable[[str, str, float], None] | None = None,
    ) -> None:
        """``on_run_end(chain id, outcome, seconds)``: after each run (metrics); outcome ``finished``, ``failed``
        or ``cancelled``."""
        self._execution = execution
        self._on_run_end = on_run_end
        self._hooks = hooks
        self._recorder: Any = recorder if recorder is not None else _NoRecorder()
        self.step_limit = step_limit
        self._background: set[asyncio.Task[None]] = set()

    async def run(
        self,
        chain: ChainDefinition,
        value: Any,
        value_type: str,
        *,
        client_tools: Sequence[dict] = (),
        on_piece: Callable[[str], Awaitable[None]] | None = None,
        ctx: CommandContext,
    ) -> RunResult:
        _validate(chain)
        run_id = str(uuid.uuid4())
        value_type = value_type.lower()
        run = _Run(self, chain, run_id, value_type, list(client_tools), on_piece, ctx)
        run.begin((chain.id, value_type, self.step_limit))
        started, outcome = time.perf_counter(), "failed"
        try:
            output, output_type = await self._execute(run, value, value_type)
            outcome = "finished"
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            if self._on_run_end is not None:
                self._on_run_end(chain.id, outcome, time.perf_counter() - started)
        return RunResult(run_id, output, output_type, run.state)

    async def _execute(self, run: _Run, value: Any, value_type: str) -> tuple[Any, str]:
        """Run it and record how it ended."""
        run_id = run.run_id
        try:
            output, output_type = await run.execute(value, value_type)
        except ChainFailed as error:
            error.run_id = run_id
            error.state = run.state
            run.flush(("failed", error.message, None))
            raise
        except DomainError as error:  # defensive: every failure should be a ChainFailed
            run.flush(("failed", error.message, None))
            raise ChainFailed(error.message, run_id, run.state) from None
        except asyncio.CancelledError:
            run.flush(("failed", "context canceled", None))
            raise
        except Exception as error:
            run.flush(("failed", f"internal error: {type(error).__name__}", None))
            raise
        run.flush(("finished", output_type, output))
        return output, output_type

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        # Outside the request's Idempotency-Key fence: the records outlive the request that started the run.
        task = asyncio.get_running_loop().create_task(work, context=without_fence())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def drain(self) -> None:
        """Wait until every run's records are appended (at shutdown, before the log writer closes; tests)."""
        while self._background:
            await asyncio.wait(list(self._background))


def _validate(chain: ChainDefinition | None) -> None:
    if chain is None or not chain.tasks:
        raise BadRequest("chain has no tasks serverops: bad request", param="chain.tasks")
    for index, task in enumerate(chain.tasks):
        if not task.id:
            raise BadRequest("task ID cannot be empty serverops: bad request", param=f"chain.tasks[{index}].id")
        if task.id == "end":
            raise BadRequest("task ID cannot be 'end' serverops: bad request", param=f"chain.tasks[{index}].id")


class _Run:
    """One run's variables, captured state and recording."""

    def __init__(
        self,
        engine: TaskEngine,
        chain: ChainDefinition,
        run_id: str,
        input_type: str,
        client_tools: list[dict],
        on_piece: Callable[[str], Awaitable[None]] | None,
        ctx: CommandContext,
    ) -> None:
        self.engine = engine
        self.chain = chain
        self.run_id = run_id
        self.input_type = input_type
        self.client_tools = client_tools
        self.on_piece = on_piece
        self.ctx = ctx
        self.values: dict[str, Any] = {}
        self.types: dict[str, str] = {}
        self.state: list[dict[str, Any]] = []
        self.pending: list[tuple[dict[str, Any], Any]] = []
        self.last_flush = time.monotonic()
        self.last_write: asyncio.Task[None] | None = None
        self.start: tuple[str, str, int] | None = None
        self.start_timer: asyncio.TimerHandle | None = None
        self.hook_tools: dict[str, tuple[str, str]] = {}  # "hook.tool" → (hook, tool)
        self.hook_tool_defs: dict[str, list[dict]] = {}  # hook → its tools, prefixed
        self.tasks: dict[str, TaskDefinition] = {}
        for task in chain.tasks:
            self.tasks.setdefault(task.id, task)

    # -- recording

    def write(self, make: Callable[[], Awaitable[None]]) -> None:
        """Append in the background, after this run's earlier appends (the run does not wait for the log)."""
        previous = self.last_write

        async def ordered() -> None:
            if previous is not None:
                await asyncio.wait([previous])
            try:
                await make()
            except Exception:  # noqa: BLE001 — the run goes on; its record is what could be appended
                logger.exception("could not record task run %s on the log", self.run_id)

        self.last_write = self.engine.spawn(ordered())

    def begin(self, start: tuple[str, str, int]) -> None:
        """Record the run's start with its first steps — or on its own if the run is still going shortly."""
        self.start = start
        self.start_timer = asyncio.get_running_loop().call_later(STARTED_ALONE_AFTER, self._write_start)

    def _write_start(self) -> None:
        start, self.start = self.start, None
        if start is not None:
            run_id, ctx, recorder = self.run_id, self.ctx, self.engine._recorder
            self.write(lambda: recorder.started(run_id, *start, ctx))

    def flush(self, end: tuple[str, Any, Any] | None) -> None:
        steps, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        start, self.start = self.start, None
        if self.start_timer is not None:
            self.start_timer.cancel()
            self.start_timer = None
        if steps or end is not None or start is not None:
            run_id, ctx, recorder = self.run_id, self.ctx, self.engine._recorder
            self.write(lambda: recorder.record(run_id, steps, end, ctx, start))

    def capture(self, unit: CapturedStateUnit, output: Any) -> None:
        data = unit.to_json()
        self.state.append(data)
        self.pending.append((data, output))

    # -- the walk

    async def execute(self, value: Any, value_type: str) -> tuple[Any, str]:
        chain = self.chain
        self.values["input"] = value
        self.types["input"] = value_type
        await self._discover_hook_tools()
        task = chain.tasks[0]
        visits = 0
        limit = self.engine.step_limit
        while True:
            if visits >= limit:
                raise ChainFailed(f"task {task.id}: step limit {limit} reached")
            visits += 1
            if len(self.pending) >= STEP_BATCH or (self.pending and time.monotonic() - self.last_flush >= FLUSH_SECONDS):
                self.flush(None)
            outcome = await self._visit(task, value, value_type)
            value, value_type, goto = outcome
            if ends(goto):
                return value, value_type
            following = self.tasks.get(goto)
            if following is None:
                raise ChainFailed(f"next task {goto} not found: task not found: {goto}")
            task = following

    async def _discover_hook_tools(self) -> None:
        first = self.chain.tasks[0].id
        for task in self.chain.tasks:
            config = task.execute_config
            if config is None or not config.hooks:
                continue
            for hook in config.hooks:
                if hook in self.hook_tool_defs:
                    continue
                if self.engine._hooks is None:
                    raise ChainFailed(f"task {first}: failed to get tools for hook {hook}: hooks are not available")
                try:
                    tools = await self.engine._hooks.tools(hook)
                except DomainError as error:
                    raise ChainFailed(f"task {first}: failed to get tools for hook {hook}: {error.message}") from None
                prefixed = []
                for tool in tools:
                    function = dict(tool.get("function") or {})
                    name = function.get("name", "")
                    function["name"] = f"{hook}.{name}"
                    prefixed.append({**tool, "type": tool.get("type", "function"), "function": function})
                    self.hook_tools[function["name"]] = (hook, name)
                self.hook_tool_defs[hook] = prefixed

    async def _visit(self, task: TaskDefinition, value: Any, value_type: str) -> tuple[Any, str, str]:
        """Run one task; (output, type, goto)."""
        tid = task.id
        if task.input_var:
            if task.input_var not in self.values:
                raise ChainFailed(f'task {tid}: input variable "{task.input_var}" not found')
            value, value_type = self.values[task.input_var], self.types[task.input_var]
        if task.prompt_template:
            try:
                value, value_type = render(task.prompt_template, self.values), STRING
            except TemplateError as error:
                raise ChainFailed(f"task {tid}: template error: {error}") from None
        timeout: float | None = None
        if task.timeout:
            try:
                timeout = parse_duration(task.timeout)
            except ValueError as error:
                raise ChainFailed(f"task {tid}: invalid timeout: {error}") from None
        retries = max(task.retry_on_failure, 0)
        debug = self.chain.debug
        input_text = debug_text(value) if debug else ""
        input_var = task.input_var or tid
        failure: _Failed | None = None
        output: Any = None
        output_type = ANY
        transition = ""
        for _attempt in range(retries + 1):
            started = time.perf_counter()
            try:
                if timeout is not None and timeout > 0:
                    async with asyncio.timeout(timeout):
                        output, output_type, transition = await self._handle(task, value, value_type)
                elif timeout is not None:  # a zero or negative timeout: the deadline has passed
                    raise _Failed("context deadline exceeded")
                else:
                    output, output_type, transition = await self._handle(task, value, value_type)
                failure = None
            except _Failed as error:
                failure = error
            except TimeoutError:
                failure = _Failed("context deadline exceeded")
            except TaskError as error:
                failure = _Failed(str(error))
            except DomainError as error:
                failure = _Failed(error.message, upstream=error)
            duration = (time.perf_counter() - started) * 1000.0
            if failure is not None:
                output, output_type, transition = failure.output, failure.output_type, failure.transition
            self.capture(
                CapturedStateUnit(
                    tid,
                    task.handler,
                    value_type,
                    output_type,
                    transition,
                    duration,
                    f"task {tid}: {failure.cause}" if failure is not None else "",
                    input_text,
                    _debug_output(output) if debug else "",
                    input_var,
                ),
                output,
            )
            if failure is None:
                break
        if failure is not None:
            target = task.transition.on_failure
            if target:
                if target not in self.tasks:
                    raise ChainFailed(f"error transition target not found: task not found: {target}")
                return output, output_type, target
            raise ChainFailed(
                f"task {tid} failed after {task.retry_on_failure} retries: task {tid}: {failure.cause}", upstream=failure.upstream
            )
        if task.compose is not None:
            output, output_type = self._compose(task, output, output_type)
        self.values["previous_output"] = output
        self.types["previous_output"] = output_type
        self.values[tid] = output
        self.types[tid] = output_type
        if task.print:
            try:
                logger.info("%s", render(task.print, self.values))
            except TemplateError as error:
                raise ChainFailed(f"task {tid}: print template error: {error}") from None
        try:
            goto = next_task(task.transition.branches, transition)
        except TaskError as error:
            raise ChainFailed(f"task {tid}: transition error: {error}") from None
        alert = _alert_of(task.transition.branches, transition)
        if alert:
            self.state[-1]["alert"] = alert  # the step just captured (recorded with the next flush)
        return output, output_type, goto

    def _compose(self, task: TaskDefinition, output: Any, output_type: str) -> tuple[Any, str]:
        assert task.compose is not None
        name = task.compose.with_var
        if name not in self.values:
            raise ChainFailed(f'task {task.id}: compose right_var "{name}" not found')
        try:
            result, result_type = compose_values(
                task.compose.strategy, self.input_type, output, output_type, self.values[name], self.types[name]
            )
        except TaskError as error:
            raise ChainFailed(f"task {task.id}: {error}") from None
        self.values[f"{task.id}_composed"] = result
        self.types[f"{task.id}_composed"] = result_type
        return result, result_type

    # -- handlers

    async def _handle(self, task: TaskDefinition, value: Any, value_type: str) -> tuple[Any, str, str]:
        handler = task.handler
        if handler == "noop":
            return value, value_type, "noop"
        if handler == "parse_transition":
            text = prompt_text(value, value_type, handler)
            return value, value_type, parse_transition(text)
        if handler == "parse_key_value":
            return parse_key_value(prompt_text(value, value_type, handler)), JSON, "parsed"
        if handler == "raise_error":
            raise _Failed(prompt_text(value, value_type, handler))
        if handler == "raw_string":
            reply = await self._prompt(task, prompt_text(value, value_type, handler), ("", STRING))
            return reply, STRING, reply
        if handler == "condition_key":
            text = prompt_text(value, value_type, handler)
            reply = await self._prompt(task, text, (False, BOOL, "false"))
            conditions = task.valid_conditions or {}
            if reply not in conditions:
                raise _Failed(f"failed to parse into valid condition output was: {reply} prompt was: {text}", False, BOOL, "false")
            result = bool(conditions[reply])
            return result, BOOL, "true" if result else "false"
        if handler == "parse_number":
            text = prompt_text(value, value_type, handler)
            reply = await self._prompt(task, text, (0, INT))
            try:
                number = parse_number(text, reply)
            except TaskError as error:
                raise _Failed(str(error), 0, INT) from None
            return number, INT, str(number)
        if handler == "parse_score":
            text = prompt_text(value, value_type, handler)
            reply = await self._prompt(task, text, (0.0, FLOAT))
            try:
                score = number_reply(text, reply)
            except TaskError as error:
                raise _Failed(str(error), 0.0, FLOAT) from None
            return score, FLOAT, f"{score:.2f}"
        if handler == "parse_range":
            text = prompt_text(value, value_type, handler)
            reply = await self._prompt(task, text, ("", STRING))
            try:
                span = parse_range(text, reply)
            except TaskError as error:
                raise _Failed(str(error), "", STRING) from None
            return span, STRING, span
        if handler == "embedding":
            return await self._embedding(task, prompt_text(value, value_type, handler)), VECTOR, "ok"
        if handler == "model_execution":
            return await self._model_execution(task, value, value_type)
        if handler == "execute_tool_calls":
            return await self._execute_tool_calls(value, value_type)
        if handler == "convert_to_openai_chat_response":
            if value_type != CHAT_HISTORY:
                raise _Failed(f"handler 'convert_to_openai_chat_response' requires input of type 'chat_history', but got '{value_type}'")
            return to_chat_completion(value, f"chatcmpl-{time.time_ns()}-{secrets.token_hex(2)}"), OPENAI_CHAT_RESPONSE, "converted"
        if handler == "hook":
            return await self._hook(task, value)
        if not handler:
            raise _Failed("executor does not support the task type: task-type is empty")
        raise _Failed(f"unknown task type: executor does not support the task type -- {handler}")

    async def _prompt(self, task: TaskDefinition, text: str, failed: tuple) -> str:
        if not text:
            raise _Failed("unprocessable empty prompt", *failed)
        config = task.execute_config
        models, providers = _candidates(config)
        try:
            reply = await self.engine._execution.generate(
                task.system_instruction,
                text,
                model_names=models,
                provider_types=providers,
                temperature=config.temperature if config is not None else None,
            )
        except DomainError as error:
            raise _Failed(error.message, *failed, upstream=error) from None
        return reply.strip()

    async def _embedding(self, task: TaskDefinition, text: str) -> list[float]:
        models, providers = _candidates(task.execute_config)
        if len(models) > 1:
            raise _Failed("multiple models specified")
        if len(providers) > 1:
            raise _Failed("multiple providers specified")
        if not text:
            raise _Failed("unprocessable empty prompt")
        try:
            return await self.engine._execution.embed(text, models[0] if models else None, providers[0] if providers else None)
        except DomainError as error:
            raise _Failed(error.message, upstream=error) from None

    async def _model_execution(self, task: TaskDefinition, value: Any, value_type: str) -> tuple[Any, str, str]:
        config = task.execute_config
        models, providers = _candidates(config)
        temperature = config.temperature if config is not None else None
        if value_type == OPENAI_CHAT:
            request = value or {}
            history = chat_history(
                [message(m.get("role", ""), m.get("content", "") or "") for m in request.get("messages") or []],
                request.get("model", "") or "",
            )
            if not models and request.get("model"):
                models = [request["model"]]
            if temperature is None and isinstance(request.get("temperature"), (int, float)):
                temperature = float(request["temperature"])
        elif value_type == CHAT_HISTORY:
            history = {**value, "messages": list(value.get("messages") or [])}
        else:
            raise _Failed(
                f"handler 'model_execution' requires input of type 'openai_chat' or 'chat_history', but got '{value_type}'"
            )
        messages = history["messages"]
        if task.system_instruction and not any(
            m.get("role") == "system" and m.get("content", "") == task.system_instruction for m in messages
        ):
            messages.insert(0, message("system", task.system_instruction))
        if int(history.get("inputTokens") or 0) <= 0:
            history["inputTokens"] = sum(estimate_tokens(m.get("content", "") or "") for m in messages)
        limit = self.chain.token_limit
        if limit > 0 and history["inputTokens"] > limit:
            raise _Failed(f"input token count {history['inputTokens']} exceeds context length {limit}")
        tools = self._tools(config)
        wire = [_wire_message(m) for m in messages]
        try:
            if self.on_piece is not None and not tools:
                pieces: list[str] = []
                async for piece in self.engine._execution.chat_stream(
                    wire, ChatOptions(temperature=temperature), model_names=models, provider_types=providers,
                    min_context=history["inputTokens"],
                ):
                    pieces.append(piece)
                    await self.on_piece(piece)
                reply = Message("assistant", "".join(pieces))
            else:
                result = await self.engine._execution.chat(
                    wire, ChatOptions(temperature=temperature, tools=tools), model_names=models, provider_types=providers,
                    min_context=history["inputTokens"],
                )
                reply = result.message
        except DomainError as error:
            raise _Failed(f"chat completion failed: {error.message}", upstream=error) from None
        calls = [
            {"id": call.id or f"call_{secrets.token_hex(6)}", "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in reply.tool_calls
        ]
        messages.append(message(reply.role or "assistant", reply.content, call_tools=calls))
        history["outputTokens"] = estimate_tokens(reply.content)
        return history, CHAT_HISTORY, "tool-call" if calls else "executed"

    def _tools(self, config: Any) -> list[dict]:
        if config is None:
            return []
        hidden = set(config.hide_tools)
        tools: list[dict] = []
        if config.pass_clients_tools:
            tools.extend(t for t in self.client_tools if (t.get("function") or {}).get("name") not in hidden)
        for hook in config.hooks:
            tools.extend(t for t in self.hook_tool_defs.get(hook, ()) if t["function"]["name"] not in hidden)
        return tools

    async def _execute_tool_calls(self, value: Any, value_type: str) -> tuple[Any, str, str]:
        if value_type != CHAT_HISTORY:
            raise _Failed(f"handler 'execute_tool_calls' requires 'chat_history' input, but got '{value_type}'")
        messages = (value or {}).get("messages") or []
        if not messages:
            return value, value_type, "no_op"
        calls = messages[-1].get("callTools") or []
        if not calls:
            return value, value_type, "no_calls_found"
        history = {**value, "messages": list(messages)}
        for call in calls:
            function = call.get("function") or {}
            name = function.get("name", "")
            owner = self.hook_tools.get(name)
            if owner is None or self.engine._hooks is None:
                continue  # a client tool: the client runs it
            hook, tool = owner
            try:
                args = json.loads(function.get("arguments") or "{}")
            except ValueError as error:
                raise _Failed(f"failed to parse arguments for tool {name}: {error}", history, CHAT_HISTORY) from None
            if not isinstance(args, dict):
                raise _Failed(f"failed to parse arguments for tool {name}: not a JSON object", history, CHAT_HISTORY)
            try:
                result, kind = await self.engine._hooks.call(hook, tool, args)
            except DomainError as error:
                raise _Failed(error.message, history, CHAT_HISTORY, upstream=error) from None
            if result is None:
                content = "nil"
            elif kind in (JSON, ANY):
                content = go_json(result)
            else:
                content = result if isinstance(result, str) else go_json(result)
            history["messages"].append(message("tool", content, tool_call_id=call.get("id", "")))
        return history, CHAT_HISTORY, "tools_executed"

    async def _hook(self, task: TaskDefinition, value: Any) -> tuple[Any, str, str]:
        hook = task.hook
        if hook is None:
            raise _Failed("hook task missing hook definition", None, ANY, "failed")
        if self.engine._hooks is None:
            raise _Failed(f"execution failed for hook '{hook.name}': hooks are not available", None, ANY, "failed")
        args: dict[str, Any] = {"input": value}
        args.update(hook.args or {})
        try:
            result, kind = await self.engine._hooks.call(hook.name, hook.tool_name, args)
        except DomainError as error:
            raise _Failed(error.message, None, ANY, "failed", upstream=error) from None
        if task.output_template:
            try:
                text = render(task.output_template, _go_decoded(result) if kind == JSON else result)
            except TemplateError as error:
                raise _Failed(f"output template error: {error}", None, ANY, "failed") from None
            return text, STRING, text
        return result, (kind if result is not None else ANY), "ok"


def _alert_of(branches: Sequence[Branch] | None, response: str) -> str:
    """The ``alert_on_match`` of the branch ``next_task`` took for ``response`` ("" when it has none): the
    first non-default branch that matches, else the default one."""
    if not branches or not any(branch.alert_on_match for branch in branches):
        return ""
    for branch in branches:
        if branch.operator != "default" and matches(branch.operator, response, branch.when):
            return branch.alert_on_match
    return next((branch.alert_on_match for branch in branches if branch.operator == "default"), "")


def _go_decoded(value: Any) -> Any:
    """A JSON value as Go decodes it into ``interface{}``: every number a float64 (so an output_template
    prints ``{"id": 1234567}`` as ``1.234567e+06``, as the reference does)."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        return {k: _go_decoded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_go_decoded(v) for v in value]
    return value


def _candidates(config: Any) -> tuple[list[str], list[str]]:
    if config is None:
        return [], []
    models = ([config.model] if config.model else []) + [m for m in config.models if m]
    providers = ([config.provider] if config.provider else []) + [p for p in config.providers if p]
    return models, providers


def _wire_message(item: Mapping[str, Any]) -> Message:
    calls = tuple(
        ToolCall(c.get("id", ""), (c.get("function") or {}).get("name", ""), (c.get("function") or {}).get("arguments", ""))
        for c in item.get("callTools") or ()
    )
    return Message(item.get("role", "") or "user", item.get("content", "") or "", calls, item.get("tool_call_id", "") or "")


def _debug_output(output: Any) -> str:
    try:
        return go_json(output)
    except ValueError:
        return str(output)


def to_chat_completion(history: Mapping[str, Any], completion_id: str, created: int | None = None) -> dict[str, Any]:
    """A ChatHistory as an OpenAI chat completion (notes §5)."""
    messages = history.get("messages") or []
    prompt_tokens = int(history.get("inputTokens") or 0)
    completion_tokens = int(history.get("outputTokens") or 0)
    choices: list[dict[str, Any]] = []
    if messages:
        last = messages[-1]
        reply: dict[str, Any] = {"role": last.get("role", "")}
        calls = last.get("callTools") or []
        if calls:
            reply["tool_calls"] = copy.deepcopy(calls)
            finish = "tool_calls"
        else:
            reply["content"] = last.get("content", "") or ""
            finish = "stop"
        choices.append({"index": 0, "message": reply, "finish_reason": finish})
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": history.get("model", "") or "",
        "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }
