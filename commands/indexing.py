"""``POST /index``: a worker's chunks of a file, enriched with keywords, embedded, recorded — and its job done.

The sentence of the notes (§8.1, with their recommendations): the job must be
leased, by this leaser; for each chunk *i* (id ``<fileId>-<i>``) the default
task model is asked for 5–7 comma-separated keywords, the chunk enriched as
``<chunk>\\n\\nKeywords: <answer>`` and the enriched text embedded with the
default embedding model; then one decision records the chunks
(``FileChunks.index``: the file's earlier chunks are cleared first, whether or
not ``replace`` was asked — re-indexing never collides) and completes the job.

The model calls happen before the decision, never in it (a decision runs on the
log writer's thread, and must be cheap to decide again), for all chunks at once
but at most ``CONCURRENT_CALLS`` at a time. The lease is checked before them,
so a worker that lost its lease wastes no model time, and again in the
decision, which is what counts: a lease lost meanwhile (the file deleted, the
reaper, another report) refuses the whole request and records nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain import jobs as job_domain
from chainloom.domain.errors import BadRequest, NotFound, Unprocessable
from chainloom.domain.file_chunks import FileChunks, IndexedChunk, chunk_id, pack_vector
from chainloom.domain.jobs import NOT_FOUND, Job

RunBlocking = Callable[..., Awaitable[Any]]
Json = dict[str, Any]

# Model calls (a keyword prompt, then an embedding) running at once for one request.
CONCURRENT_CALLS = 8
MISSING_PARAMETER = "serverops: missing parameter"
NOT_LEASED_BY_LEASER = "job is not leased by this leaser"

KEYWORDS_PROMPT = (
    "Extract 5 to 7 keywords that best describe the following text. "
    "Answer with the keywords only, comma-separated, on one line.\n\nText:\n{text}"
)


def keywords_prompt(text: str) -> str:
    return KEYWORDS_PROMPT.format(text=text)


def enriched(text: str, keywords: str) -> str:
    """What is embedded and answered as ``augmentedMetadata``: the chunk, a blank line, its keywords."""
    return f"{text}\n\nKeywords: {keywords}"


class Models(Protocol):
    """``commands.execution.ExecutionService``: the default task and embedding models."""

    async def prompt(self, prompt: str, model_name: str | None = None, provider_type: str | None = None) -> str: ...

    async def embed(self, text: str, model_name: str | None = None, provider_type: str | None = None) -> list[float]: ...


@dataclass(frozen=True)
class IndexRequest:
    file_id: str
    chunks: Sequence[str]
    replace: bool
    job_id: str
    leaser: str

    def validate(self) -> None:
        if not self.job_id:
            raise BadRequest(f"{MISSING_PARAMETER}: jobId is required", param="jobId")
        if not self.leaser:
            raise BadRequest(f"{MISSING_PARAMETER}: leaserId is required", param="leaserId")
        if not self.file_id:
            raise BadRequest(f"{MISSING_PARAMETER}: id is required", param="id")


def _leased(job: Job | None, request: IndexRequest) -> Job:
    """The job the request completes: leased (else 404), by its leaser (else 422), for its file (else 422)."""
    if job is None or job.state != job_domain.LEASED:
        raise NotFound(f"no leased job {request.job_id}: {NOT_FOUND}")
    if not job.leased_by(request.leaser):
        raise Unprocessable(NOT_LEASED_BY_LEASER, param="leaserId")
    if job.entity_id != request.file_id:
        raise Unprocessable(f"job {request.job_id} indexes {job.entity_type} {job.entity_id}, not {request.file_id}", param="id")
    return job


class IndexCommands:
    def __init__(
        self,
        runner: CommandRunner,
        models: Models,
        embed_model: Callable[[], str],
        job_of: Callable[[str], Job | None],
        run_blocking: RunBlocking,
        concurrency: int = CONCURRENT_CALLS,
    ) -> None:
        """``runner`` waits for the ``vectors`` and ``jobs`` read models; ``embed_model()``: the name of the
        embedding model recorded with each chunk; ``job_of``: a job as the log has it now (blocking)."""
        self._runner = runner
        self._models = models
        self._embed_model = embed_model
        self._job_of = job_of
        self._run_blocking = run_blocking
        self._concurrency = concurrency

    async def index(self, request: IndexRequest, ctx: CommandContext) -> Json:
        request.validate()
        job = _leased(await self._run_blocking(self._job_of, request.job_id), request)
        model = self._embed_model()
        enrichments = await self._enrich(request.chunks)
        chunks = [
            IndexedChunk(
                chunk_id(request.file_id, i), i, text, keywords, model, pack_vector(vector), job.entity_type or "file"
            )
            for i, (text, (keywords, vector)) in enumerate(zip(request.chunks, enrichments))
        ]

        def decide(log: Aggregates) -> Decision[None]:
            leased = _leased(log.get(Job, request.job_id), request)
            indexed = log.get(FileChunks, request.file_id) or FileChunks.start(request.file_id)
            indexed.index(chunks)  # the file's earlier chunks are cleared first (replace or not)
            leased.complete(request.leaser)
            return Decision(None, [indexed, leased])

        await self._runner.run(decide, ctx)
        return {
            "id": request.file_id,
            "vectors": [chunk.chunk_id for chunk in chunks],
            "augmentedMetadata": [enriched(chunk.text, chunk.keywords) for chunk in chunks],
        }

    async def _enrich(self, texts: Sequence[str]) -> list[tuple[str, list[float]]]:
        """Each chunk's keywords and the embedding of its enriched text, at most ``concurrency`` at a time."""
        gate = asyncio.Semaphore(self._concurrency)

        async def one(text: str) -> tuple[str, list[float]]:
            async with gate:
                keywords = " ".join((await self._models.prompt(keywords_prompt(text))).split())
                return keywords, await self._models.embed(enriched(text, keywords))

        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the rest
                tasks = [group.create_task(one(text)) for text in texts]
        except ExceptionGroup as failures:  # the first failure is the answer (a 422, 502 or 503 of the models)
            raise failures.exceptions[0] from None
        return [task.result() for task in tasks]
