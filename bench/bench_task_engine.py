"""What the task engine costs per step: a 10-step chain of cheap handlers, and one LLM step against a fake.

    .venv/bin/python bench/bench_task_engine.py            # SQLite log in a temporary directory
    .venv/bin/python bench/bench_task_engine.py --runs 500

Measured at the service level, in this process, on uvloop as the service runs:

1. **Cheap steps.** A 10-step chain (noop, parse_transition, parse_key_value, templates, a compose, a
   ``contains``/``default`` transition on every step) run N times, with no recording (the engine alone)
   and with the run recorded on a real log (``task_run.started`` + one append of the ten steps and
   ``finished``, through the process's ``LogWriter`` on SQLite, in the background as ``chainloom serve``
   does: the run does not wait for them). Per step = per run / 10; CPU is this process's (the writer
   thread's included); the last figure is the wall time until every record was appended.
2. **One LLM step.** A ``raw_string`` task against a fake Ollama in its own process
   (``tests/fakes/llm.py``, answering at once), through the real ``ExecutionService`` (its state read model a
   stand-in returning the fake, as in tests/integration), versus ``ExecutionService.generate`` called
   directly with the same prompt: the difference is what the engine adds to an LLM step (recording
   included).

Figures only: nothing is asserted. Aim: under 1 ms of engine overhead per step.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chainloom.commands.base import CommandContext, CommandRunner  # noqa: E402
from chainloom.commands.execution import Defaults, ExecutionService  # noqa: E402
from chainloom.commands.tasks import TaskEngine, TaskRunRecorder  # noqa: E402
from chainloom.domain.runtime import BackendState, PulledModel  # noqa: E402
from chainloom.domain.taskchains import ChainDefinition  # noqa: E402
from chainloom.infra.bootstrap import open_resources  # noqa: E402
from chainloom.infra.logwriter import LogWriter  # noqa: E402
from chainloom.infra.providers import open_clients  # noqa: E402
from chainloom.infra.settings import Settings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = "phi3:3.8b"
CTX = CommandContext(actor="bench", request_id="bench")


def _task(task_id: str, handler: str, goto: str, **fields) -> dict:
    branches = [{"operator": "contains", "when": "never-there", "goto": "end"}, {"operator": "default", "goto": goto}]
    return {"id": task_id, "handler": handler, "transition": {"branches": branches}, **fields}


CHEAP = ChainDefinition.from_json(
    {
        "id": "cheap",
        "tasks": [
            _task("t1", "parse_key_value", "t2", prompt_template="a=1; b={{.input}}; c=true"),
            _task("t2", "noop", "t3"),
            _task("t3", "parse_transition", "t4", prompt_template="/route {{.t1.b}}"),
            _task("t4", "noop", "t5", input_var="t1"),
            _task("t5", "parse_key_value", "t6", prompt_template="d=4", compose={"with_var": "t1"}),
            _task("t6", "noop", "t7", input_var="t5_composed"),
            _task("t7", "parse_transition", "t8", prompt_template="plain {{.t6.d}}"),
            _task("t8", "noop", "t9"),
            _task("t9", "parse_key_value", "t10", prompt_template="x: {{.t1.a}}\ny: {{index . \"t3\"}}"),
            _task("t10", "noop", "end", prompt_template="done {{.t9.x}}"),
        ],
    }
)
LLM = ChainDefinition.from_json({"id": "llm", "tasks": [_task("ask", "raw_string", "end", system_instruction="Be brief.")]})
PROMPT = "What is the capital of France? Answer with one word."


class States:
    def __init__(self, url: str) -> None:
        model = PulledModel(MODEL, MODEL, context_length=4096, can_chat=True, can_prompt=True, can_stream=True)
        self.current = [BackendState("b", "fake", "ollama", url, (MODEL,), (model,), "")]

    async def states(self) -> list[BackendState]:
        return self.current


class Keys:
    async def api_key(self, provider_type: str) -> str | None:
        return None


async def _announce(position: int | None) -> None:
    return None


def _line(label: str, samples: list[float], per: int = 1) -> str:
    p50 = statistics.median(samples) / per * 1000
    p99 = sorted(samples)[int(len(samples) * 0.99) - 1] / per * 1000
    return f"  {label:<44} p50 {p50:8.3f} ms   p99 {p99:8.3f} ms"


async def _timed(engine: TaskEngine, chain: ChainDefinition, value: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        await engine.run(chain, value, "string", ctx=CTX)
        samples.append(time.perf_counter() - start)
    return samples


async def _bench(url: str, runs: int, data_dir: str) -> None:
    clients = open_clients(Settings(provider_timeout=10, provider_connect_timeout=2))
    service = ExecutionService(States(url), Keys(), clients, Defaults(MODEL, "ollama", MODEL, "ollama", MODEL, "ollama"))
    settings = Settings(data_dir=Path(data_dir), database_url="")
    with open_resources(settings, read_store=False) as resources:
        writer = LogWriter(resources.log)
        try:
            bare = TaskEngine(service)
            recorded = TaskEngine(service, recorder=TaskRunRecorder(CommandRunner(writer, _announce)))
            for engine in (bare, recorded):  # warm up (templates parsed, connections open)
                await _timed(engine, CHEAP, "warm", 20)
                await _timed(engine, LLM, PROMPT, 20)
            print(f"10-step chain of cheap handlers, {runs} runs (per step = per run / 10):")
            cpu = time.process_time()
            samples = await _timed(bare, CHEAP, "cats", runs)
            bare_cpu = (time.process_time() - cpu) / runs / 10 * 1000
            print(_line("engine alone, per step", samples, 10) + f"   CPU {bare_cpu:.3f} ms/step")
            await recorded.drain()
            cpu, wall = time.process_time(), time.perf_counter()
            samples = await _timed(recorded, CHEAP, "cats", runs)
            await recorded.drain()  # every record appended: the log's work counted in
            rec_cpu = (time.process_time() - cpu) / runs / 10 * 1000
            rec_wall = (time.perf_counter() - wall) / runs / 10 * 1000
            print(_line("recorded on the log (SQLite), per step", samples, 10) + f"   CPU {rec_cpu:.3f} ms/step")
            print(f"  {'  … until every record is appended':<44} {rec_wall:8.3f} ms/step (wall, sequential runs)")
            print(f"\none raw_string step against a fake Ollama, {runs} runs:")
            direct: list[float] = []
            chained: list[float] = []
            chained_recorded: list[float] = []
            for _ in range(runs):  # alternate, so the machine's other load falls on all alike
                start = time.perf_counter()
                await service.generate("Be brief.", PROMPT)
                direct.append(time.perf_counter() - start)
                chained += await _timed(bare, LLM, PROMPT, 1)
                chained_recorded += await _timed(recorded, LLM, PROMPT, 1)
            print(_line("ExecutionService.generate directly", direct))
            print(_line("the chain (engine alone)", chained))
            print(_line("the chain (recorded on the log)", chained_recorded))
            added = statistics.median(chained) - statistics.median(direct)
            added_recorded = statistics.median(chained_recorded) - statistics.median(direct)
            print(f"  engine adds (p50): {added * 1000:.3f} ms alone, {added_recorded * 1000:.3f} ms with recording")
        finally:
            await recorded.drain()
            writer.close()
            await clients.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    fake = subprocess.Popen([sys.executable, "-m", "tests.fakes.llm", "ollama"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().strip()
        import uvloop  # as the service runs (web/workers.py)

        with tempfile.TemporaryDirectory(prefix="chainloom-bench-") as data_dir:
            uvloop.run(_bench(url, args.runs, data_dir))
    finally:
        fake.terminate()
        fake.wait()


if __name__ == "__main__":
    main()
