"""Webhook signatures: a delivery proves it comes from the holder of the mapping's secret.

Two schemes, both HMAC-SHA256 keyed with the secret:

* ``hmac-sha256`` (GitHub's style): the header (``X-Hub-Signature-256`` unless
  the mapping names another) carries ``sha256=<hex>`` of the raw body.
* ``standard-webhooks`` (standardwebhooks.com): ``webhook-signature`` carries
  ``v1,<base64>`` entries (space separated) of ``"<webhook-id>.<webhook-timestamp>.<body>"``;
  the timestamp must be within five minutes of now. A secret written
  ``whsec_<base64>`` is that base64's bytes, any other its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from chainloom.domain.errors import Unauthorized, Unprocessable

TIMESTAMP_TOLERANCE_S = 5 * 60


def verify(scheme: str, secret: str, header_name: str, body: bytes, headers: Mapping[str, str], now_s: int) -> None:
    """Return if the delivery is signed with ``secret``; raise Unauthorized saying why not otherwise.

    ``headers`` must look names up case-insensitively (as HTTP header mappings do).
    """
    if scheme == "hmac-sha256":
        _verify_hex(secret, header_name, body, headers)
    elif scheme == "standard-webhooks":
        _verify_standard(secret, body, headers, now_s)
    elif scheme:
        raise Unauthorized(f"unknown signature scheme {scheme!r}")


def _verify_hex(secret: str, header_name: str, body: bytes, headers: Mapping[str, str]) -> None:
    offered = (headers.get(header_name) or "").strip()
    if not offered:
        raise Unauthorized(f"missing webhook signature: header {header_name} is required")
    if offered.lower().startswith("sha256="):
        offered = offered[7:]
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(offered.lower().encode(), expected.encode()):
        raise Unauthorized("invalid webhook signature")


def _verify_standard(secret: str, body: bytes, headers: Mapping[str, str], now_s: int) -> None:
    message_id = headers.get("webhook-id") or ""
    timestamp = headers.get("webhook-timestamp") or ""
    signatures = headers.get("webhook-signature") or ""
    if not (message_id and timestamp and signatures):
        raise Unauthorized(
            "missing webhook signature: headers webhook-id, webhook-timestamp and webhook-signature are required"
        )
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise Unauthorized("invalid webhook-timestamp: expected integer seconds") from None
    if abs(now_s - sent_at) > TIMESTAMP_TOLERANCE_S:
        raise Unauthorized("webhook-timestamp is outside the five-minute tolerance")
    signed = f"{message_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(_standard_key(secret), signed, hashlib.sha256).digest())
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return
    raise Unauthorized("invalid webhook signature")


def _standard_key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[6:], validate=True)  # checked when the mapping was saved
    return secret.encode()


def check_secret(scheme: str, secret: str) -> None:
    """Refuse a secret the scheme could never verify with (empty, or a malformed ``whsec_`` key)."""
    if not secret:
        raise Unprocessable("invalid mapping configuration: signatureSecret must not be empty", param="signatureSecret")
    if scheme == "standard-webhooks" and secret.startswith("whsec_"):
        try:
            base64.b64decode(secret[6:], validate=True)
        except (binascii.Error, ValueError):
            raise Unprocessable(
                "invalid mapping configuration: signatureSecret 'whsec_…' must be followed by base64",
                param="signatureSecret",
            ) from None
