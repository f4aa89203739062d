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
        key_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(descriptor, "w") as out:
                out.write(base64.b64encode(os.urandom(32)).decode())
    return SecretBox(base64.b64decode(key_file.read_text().strip()))
