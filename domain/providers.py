"""A cloud provider's configuration (OpenAI, Gemini): its API key, kept sealed.

One aggregate per provider type (its key is the type). Every event but
``ConfigDeleted`` carries the whole configuration: the key as the service
sealed it (``sealed_key``, ciphertext — never the key in clear, since every
event goes to the log and Kafka) and ``key_hint``, the masked form answers show
(``mask_key``). Configuring a provider also makes its backend
(``Backend.create_provider_backend``); that is the command's business.
"""

from __future__ import annotations

from eventsourcing.domain import event

from chainloom.domain.backends import PROVIDER_TYPES
from chainloom.domain.base import Aggregate
from chainloom.domain.errors import NotFound, Unprocessable

MAX_KEY_LENGTH = 4096
# A key this short or shorter is shown as "…" alone: four characters of it would be half of it.
_SHORT_KEY = 8
# A prefix (up to and including the first '-', such as "sk-") is shown only when this short.
_MAX_PREFIX = 8


def check_provider_type(provider_type: str) -> None:
    if provider_type not in PROVIDER_TYPES:
        raise NotFound(f"libdb: not found: no provider '{provider_type}' (openai or gemini)")


def check_api_key(api_key: str) -> None:
    """A key is sent in an HTTP header: printable ASCII without spaces, and not empty."""
    if not api_key:
        raise Unprocessable("api key is required", param="apiKey")
    if len(api_key) > MAX_KEY_LENGTH:
        raise Unprocessable(f"api key is longer than {MAX_KEY_LENGTH} characters", param="apiKey")
    if not all("!" <= character <= "~" for character in api_key):
        raise Unprocessable("api key must be printable ASCII without spaces", param="apiKey")


def mask_key(api_key: str) -> str:
    """``sk-proj-abcd…wxyz`` → ``sk-…wxyz``: a short prefix up to the first '-' (if any), '…', the last
    four characters; a key of eight characters or fewer → ``…``."""
    if len(api_key) <= _SHORT_KEY:
        return "…"
    prefix = ""
    dash = api_key.find("-")
    if 0 <= dash < _MAX_PREFIX and len(api_key) - (dash + 1) - 4 >= _SHORT_KEY:
        prefix = api_key[: dash + 1]
    return f"{prefix}…{api_key[-4:]}"


class ProviderConfig(Aggregate):
    aggregate_type = "provider"

    class Configured(Aggregate.Created):
        type: str
        sealed_key: str
        key_hint: str

    class Reconfigured(Aggregate.Event):
        """Configured again: with ``upsert``, or after the configuration was deleted."""

        type: str
        sealed_key: str
        key_hint: str

    class ConfigDeleted(Aggregate.Event):
        pass

    @classmethod
    def configure(cls, provider_type: str, sealed_key: str, key_hint: str) -> ProviderConfig:
        check_provider_type(provider_type)
        return cls._create(
            cls.Configured, id=cls.stream_id(provider_type), type=provider_type, sealed_key=sealed_key, key_hint=key_hint
        )

    @event(Configured)
    def __init__(self, type: str, sealed_key: str, key_hint: str) -> None:
        self.type = type
        self.sealed_key = sealed_key
        self.key_hint = key_hint
        self.deleted = False

    @property
    def configured(self) -> bool:
        return not self.deleted

    def reconfigure(self, sealed_key: str, key_hint: str, upsert: bool) -> None:
        """Set the key again: refused while configured unless ``upsert``."""
        if self.configured and not upsert:
            raise Unprocessable("provider config already exists")
        self._reconfigure(type=self.type, sealed_key=sealed_key, key_hint=key_hint)

    def delete(self) -> None:
        if self.deleted:
            raise NotFound("libdb: not found")
        self._delete()

    @event(Reconfigured)
    def _reconfigure(self, type: str, sealed_key: str, key_hint: str) -> None:
        self.sealed_key = sealed_key
        self.key_hint = key_hint
        self.deleted = False

    @event(ConfigDeleted)
    def _delete(self) -> None:
        self.deleted = True
