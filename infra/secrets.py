"""Sealing secrets that must be kept in events (webhook signature secrets).

Every event is relayed to Kafka, so a secret never enters the log in clear:
it is sealed with AES-256-GCM under a key from the settings
(``CHAINLOOM_SECRETS_KEY``, base64 of 32 bytes). In the embedded mode, when no
key is configured, one is generated once into ``<data dir>/secrets.key``
(mode 0600); with PostgreSQL the key must be configured, since every API
process has to open what another sealed. Losing the key loses the secrets
(mappings then need them set again), not the events.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = "v1"
_NONCE_BYTES = 12


class SecretsUnavailable(Exception):
    """No key to seal or open secrets with (or the wrong one)."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretsUnavailable("the secrets key must be 32 bytes (base64 of 32 bytes in CHAINLOOM_SECRETS_KEY)")
        self._aead = AESGCM(key)
        self._key = key

    def derive(self, purpose: str) -> bytes:
        """A key of its own for ``purpose`` (HMAC-SHA256 of it under the secrets key): every process with
        the secrets key derives the same one, and it reveals nothing of the secrets key."""
        return hmac.new(self._key, purpose.encode(), hashlib.sha256).digest()

    def seal(self, secret: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), _VERSION.encode())
        return f"{_VERSION}:{base64.b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str) -> str:
        version, _, text = sealed.partition(":")
        if version != _VERSION:
            raise SecretsUnavailable(f"unknown sealed-secret format {version!r}")
        try:
            raw = base64.b64decode(text, validate=True)
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _VERSION.encode()).decode()
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretsUnavailable("the secret cannot be opened with the configured key") from None


def open_secret_box(configured_key: str, key_file: Path | None) -> SecretBox | None:
    """The box for the configured key; else for the key file (created if absent); else None."""
    if configured_key:
        try:
            return SecretBox(base64.b64decode(configured_key, validate=True))
        except (binascii.Error, ValueError):
            raise SecretsUnavailable("CHAINLOOM_SECRETS_KEY is not valid base64") from None
    if key_file is None:
        return None
    if not key_file.exists():
        # Written whole under a name of its own, then linked into place: a process starting at the same
        # time (the workers of `chainloom serve`) finds either no key file or a complete one, never an
        # empty one being written.
        key_file.parent.mkdir(parents=True, exist_ok=True)
        draft = key_file.with_name(f".{key_file.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(base64.b64encode(os.urandom(32)).decode())
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(draft, key_file)
        except FileExistsError:  # another process made it first: use that one
            pass
        finally:
            draft.unlink()
    return SecretBox(base64.b64decode(key_file.read_text().strip()))
