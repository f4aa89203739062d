"""Commands of the cloud providers (OpenAI, Gemini): configure an API key, delete it.

Configuring a provider is one decision, one append: the configuration (the key
sealed with the process's ``SecretBox``, never in clear) and the provider's
backend (id = name = type), created when missing — or deleted before — and,
with ``upsert``, reset to the provider's name and base URL. Its name and base
URL are claimed like any backend's (409 on a clash). Deleting the configuration
keeps the backend (the runtime then reports it has no key).
"""

from __future__ import annotations

from chainloom.commands.base import Aggregates, CommandContext, CommandRunner, Decision
from chainloom.domain.backends import PROVIDER_BASE_URLS, Backend
from chainloom.domain.errors import NotFound, Unprocessable
from chainloom.domain.providers import ProviderConfig, check_api_key, check_provider_type, mask_key
from chainloom.domain.uniqueness import BACKEND_NAME, BACKEND_URL, ensure_free
from chainloom.infra.secrets import SecretBox


class ProviderCommands:
    def __init__(self, runner: CommandRunner, secrets: SecretBox | None) -> None:
        self._runner = runner
        self._secrets = secrets

    async def configure(self, provider_type: str, api_key: str, upsert: bool, ctx: CommandContext) -> None:
        check_provider_type(provider_type)
        check_api_key(api_key)
        if self._secrets is None:
            raise Unprocessable("provider API keys need a key to be sealed with: set CHAINLOOM_SECRETS_KEY", param="apiKey")
        sealed, hint = self._secrets.seal(api_key), mask_key(api_key)

        def decide(log: Aggregates) -> Decision[None]:
            config = log.get(ProviderConfig, provider_type)
            if config is None:
                config = ProviderConfig.configure(provider_type, sealed, hint)
            else:
                config.reconfigure(sealed, hint, upsert)
            save: list = [config]
            backend = log.get(Backend, provider_type)
            if backend is None:
                backend = Backend.create_provider_backend(provider_type)
                save.append(backend)
            elif (backend.deleted or upsert) and backend.reset_provider_backend(provider_type):
                save.append(backend)
            if len(save) > 1:  # the backend's name and base URL are claimed as any backend's
                ensure_free(log.owner_of, BACKEND_NAME, provider_type, provider_type, f"backend name '{provider_type}'")
                url = PROVIDER_BASE_URLS[provider_type]
                ensure_free(log.owner_of, BACKEND_URL, url, provider_type, f"backend baseUrl '{url}'")
            return Decision(None, save)

        await self._runner.run(decide, ctx)

    async def delete_config(self, provider_type: str, ctx: CommandContext) -> None:
        check_provider_type(provider_type)

        def decide(log: Aggregates) -> Decision[None]:
            config = log.get(ProviderConfig, provider_type)
            if config is None:
                raise NotFound("libdb: not found")
            config.delete()
            return Decision(None, [config])

        await self._runner.run(decide, ctx)
