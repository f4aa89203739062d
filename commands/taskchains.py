"""Commands of stored task chains: upsert (``POST /taskchains``, ``POST /chains``), replace, delete."""

from __future__ import annotations

from dataclasses import replace

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain.errors import NotFound, Unprocessable
from chainloom.domain.taskchains import ChainDefinition, TaskChain


class TaskChainCommands:
    def __init__(self, runner: CommandRunner) -> None:
        self._runner = runner

    async def store(self, chain: ChainDefinition, ctx: CommandContext) -> ChainDefinition:
        """Create the chain, or replace the one with its id (created again if it was deleted)."""
        chain.validate()

        def decide(log: Aggregates) -> Decision[ChainDefinition]:
            stored = log.get(TaskChain, chain.id)
            if stored is None:
                stored = TaskChain.create(chain)
            else:
                stored.store(chain)
            return Decision(chain, [stored])

        return await self._runner.run(decide, ctx)

    async def replace(self, chain_id: str, chain: ChainDefinition, ctx: CommandContext) -> ChainDefinition:
        """Replace an existing chain; a body id other than the path's is refused, the path's id is kept."""
        if chain.id and chain.id != chain_id:
            raise Unprocessable("serverops: unprocessable entity: ID in payload does not match URL", param="id")
        chain = replace(chain, id=chain_id)
        chain.validate()

        def decide(log: Aggregates) -> Decision[ChainDefinition]:
            stored = log.get(TaskChain, chain_id)
            if stored is None:
                raise NotFound("libdb: not found")
            stored.replace(chain)
            return Decision(chain, [stored])

        return await self._runner.run(decide, ctx)

    async def delete(self, chain_id: str, ctx: CommandContext) -> None:
        def decide(log: Aggregates) -> Decision[None]:
            stored = log.get(TaskChain, chain_id)
            if stored is None:
                raise NotFound("libdb: not found")
            stored.delete()
            return Decision(None, [stored])

        await self._runner.run(decide, ctx)
