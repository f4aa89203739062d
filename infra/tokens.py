"""Tokens users sign in for: HS256 JWTs (pyjwt) carrying who they are and their access entries.

Claims, as the reference issues them (clients and its Python worker read them):
``sub`` and ``identity`` (the user's subject), ``iat`` and ``exp`` (Unix
seconds), and ``permissions``, the user's access entries *as they were at issue
time* (``domain.identity.Grant.to_claim``). A refresh copies ``sub``,
``identity`` and ``permissions``: a grant made since reaches a user at its next
sign-in (token-first precedence, platform notes §2.5).

Only HMAC algorithms are accepted (``none`` and public-key algorithms are
refused: a token must prove it was made with our secret), and the expiry is
checked against the injected clock. A refusal is ``TokenRejected`` with the
reference's message fragments, which clients match on (``invalid token
claims``, ``token is expired``, ``token is malformed: token contains an
invalid number of segments``); a message never quotes the token.

Verifying costs about 0.06 ms (base64, JSON, HMAC: more than the 0.05 ms a
whole authorised request may spend on it); a client sends the same token again
and again, so a verified token's claims are remembered (by the whole token
text: another text is verified afresh) and only its expiry is looked at next
time, about 0.2 µs.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from chainloom.domain.errors import TokenRejected
from chainloom.domain.identity import Grant
from chainloom.infra.secrets import SecretBox

logger = logging.getLogger(__name__)

ALGORITHM = "HS256"
HMAC_ALGORITHMS = ["HS256", "HS384", "HS512"]
MIN_SECRET_BYTES = 16
# pyjwt warns on every call about HMAC keys shorter than the hash (32 bytes for HS256); the reference's
# JWT_SECRET may be 16 characters. Said once, at start-up (``Tokens``), instead.
warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)
# Verified tokens remembered (their claims), at most.
REMEMBERED = 10_000
# What a derived secret is derived for (``token_secret``).
_PURPOSE = "chainloom jwt"

_INVALID = "invalid token claims"
EXPIRED = f"{_INVALID}: token has invalid claims: token is expired"
MALFORMED_SEGMENTS = f"{_INVALID}: token is malformed: token contains an invalid number of segments"
_OPTIONS = {
    # Expiry is checked here against the injected clock (pyjwt would read its own); iat and nbf are not
    # checked (neither does the reference).
    "verify_exp": False,
    "verify_iat": False,
    "verify_nbf": False,
    "require": ["sub", "iat", "exp"],
}


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    subject: str
    permissions: tuple[Grant, ...]  # as in the token
    expires_at: int  # unix seconds
    issued_at: int


def token_secret(configured: str, secrets: SecretBox | None) -> bytes | None:
    """The configured secret, else one derived from the secrets key (HMAC-SHA256 of "chainloom jwt"),
    else None (no secrets key either)."""
    if configured:
        return configured.encode()
    return secrets.derive(_PURPOSE) if secrets is not None else None


class Tokens:
    def __init__(self, secret: bytes, lifetime_s: float, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a token secret must be at least {MIN_SECRET_BYTES} bytes")
        if len(secret) < 32:
            logger.warning("JWT_SECRET is shorter than 32 bytes: HS256 tokens are only as strong as their secret")
        self._secret = secret
        self._lifetime = max(1, round(lifetime_s))
        self._clock = clock
        self._verified: dict[str, Claims] = {}

    def issue(self, subject: str, grants: Sequence[Grant]) -> tuple[str, int]:
        """A token for ``subject`` carrying ``grants``; with its expiry (unix seconds)."""
        issued_at = int(self._clock())
        expires_at = issued_at + self._lifetime
        payload = {
            "sub": subject,
            "iat": issued_at,
            "exp": expires_at,
            "identity": subject,
            "permissions": [grant.to_claim() for grant in grants],
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM), expires_at

    def verify(self, token: str) -> Claims:
        """The token's claims; ``TokenRejected`` when it is malformed, not ours, or expired."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(self._verified) >= REMEMBERED:
                del self._verified[next(iter(self._verified))]  # the oldest remembered
            self._verified[token] = claims
        if self._clock() >= claims.expires_at:
            raise TokenRejected(EXPIRED)
        return claims

    def refresh(self, claims: Claims) -> tuple[str, int]:
        """A new token with the same subject and permissions, valid from now."""
        return self.issue(claims.subject, claims.permissions)

    def _decode(self, token: str) -> Claims:
        if token.count(".") != 2:
            raise TokenRejected(MALFORMED_SEGMENTS)
        try:
            payload = jwt.decode(token, self._secret, algorithms=HMAC_ALGORITHMS, options=_OPTIONS)  # type: ignore[arg-type]
        except jwt.InvalidAlgorithmError:
            raise TokenRejected(f"{_INVALID}: token is unverifiable: signing method is not HMAC") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected(f"{_INVALID}: token signature is invalid: signature is invalid") from None
        except jwt.MissingRequiredClaimError as error:
            raise TokenRejected(f"{_INVALID}: token has invalid claims: token is missing required claim {error.claim}") from None
        except jwt.DecodeError as error:
            raise TokenRejected(f"{_INVALID}: token is malformed: {error}") from None
        except jwt.InvalidTokenError as error:
            raise TokenRejected(f"{_INVALID}: {error}") from None
        return _claims(payload)


def _claims(payload: dict[str, Any]) -> Claims:
    subject, expires_at, issued_at = payload["sub"], payload["exp"], payload["iat"]
    if not isinstance(subject, str) or not subject:
        raise TokenRejected(f"{_INVALID}: token has invalid claims: sub must be a non-empty string")
    if type(expires_at) is not int or type(issued_at) is not int:
        raise TokenRejected(f"{_INVALID}: token has invalid claims: exp and iat must be integers")
    entries = payload.get("permissions") or []
    if not isinstance(entries, list):
        raise TokenRejected(f"{_INVALID}: token has invalid claims: permissions must be an array")
    try:
        grants = tuple(Grant.from_claim(entry) for entry in entries)
    except ValueError as error:
        raise TokenRejected(f"{_INVALID}: token has invalid claims: {error}") from None
    return Claims(subject, grants, expires_at, issued_at)
