"""Tokens: the reference's claims, expiry on the injected clock (freezegun), only HMAC accepted, tampering
refused, and the message fragments clients match on."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from freezegun import freeze_time

from chainloom.domain.errors import TokenRejected
from chainloom.domain.identity import Grant, Permission
from chainloom.infra.secrets import SecretBox
from chainloom.infra.tokens import Claims, Tokens, token_secret

SECRET = b"a-secret-of-32-bytes-for-hs256!!"
GRANTS = (
    Grant("e-1", "u-1", "server", "system", Permission.NONE, "2025-08-21T10:00:00Z", "2025-08-21T10:00:00Z"),
    Grant("e-2", "u-1", "chatservice", "system", Permission.VIEW, "2025-08-21T10:00:01.5Z", "2025-08-21T10:00:02Z"),
)


def _segments(token: str) -> list[str]:
    return token.split(".")


def _payload(token: str) -> dict:
    part = _segments(token)[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_a_token_carries_the_references_claims():
    with freeze_time("2025-08-21 10:00:00"):
        tokens = Tokens(SECRET, 3600, clock=time.time)
        token, expires_at = tokens.issue("u-1", GRANTS)
    now = 1755770400
    assert expires_at == now + 3600
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})
    assert decoded == {
        "sub": "u-1",
        "identity": "u-1",
        "iat": now,
        "exp": now + 3600,
        "permissions": [grant.to_claim() for grant in GRANTS],
    }
    assert decoded["permissions"][1]["permission"] == 1  # levels as integers
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_a_token_is_valid_until_it_expires_by_the_clock():
    with freeze_time("2025-08-21 10:00:00") as frozen:
        tokens = Tokens(SECRET, 60, clock=time.time)
        token, expires_at = tokens.issue("u-1", GRANTS)
        assert tokens.verify(token) == Claims("u-1", GRANTS, expires_at, expires_at - 60)
        frozen.tick(59.9)
        assert tokens.verify(token).subject == "u-1"  # remembered: its expiry is still looked at
        frozen.tick(0.1)
        with pytest.raises(TokenRejected, match="token is expired") as refused:
            tokens.verify(token)
        assert "invalid token claims" in refused.value.message
        # Another process (nothing remembered) says the same.
        with pytest.raises(TokenRejected, match="token is expired"):
            Tokens(SECRET, 60, clock=time.time).verify(token)


def test_a_refresh_keeps_subject_and_permissions_and_starts_a_new_lifetime():
    with freeze_time("2025-08-21 10:00:00") as frozen:
        tokens = Tokens(SECRET, 600, clock=time.time)
        token, _ = tokens.issue("u-1", GRANTS)
        frozen.tick(300)
        fresh, expires_at = tokens.refresh(tokens.verify(token))
        assert expires_at == 1755770400 + 300 + 600
        claims = tokens.verify(fresh)
        assert (claims.subject, claims.permissions, claims.issued_at) == ("u-1", GRANTS, 1755770400 + 300)
        assert _payload(fresh)["identity"] == "u-1"
        frozen.tick(301)
        with pytest.raises(TokenRejected, match="token is expired"):
            tokens.verify(token)
        assert tokens.verify(fresh).subject == "u-1"


def _signed_with(payload: dict, key, algorithm: str) -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def _valid_payload() -> dict:
    now = int(time.time())
    return {"sub": "u-1", "identity": "u-1", "iat": now, "exp": now + 600, "permissions": [GRANTS[0].to_claim()]}


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # HS512 with a 32-byte secret
def test_only_tokens_signed_with_our_secret_by_hmac_are_accepted():
    tokens = Tokens(SECRET, 600)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "none": jwt.encode(_valid_payload(), None, algorithm="none"),  # type: ignore[arg-type]
        "RS256": _signed_with(_valid_payload(), rsa_key, "RS256"),
        "another secret": _signed_with(_valid_payload(), b"another-secret-of-32-bytes-long!", "HS256"),
    }
    for name, token in refused.items():
        with pytest.raises(TokenRejected, match="invalid token claims") as error:
            tokens.verify(token)
        assert token not in error.value.message, name
    # Another HMAC algorithm with our secret is ours.
    assert tokens.verify(_signed_with(_valid_payload(), SECRET, "HS512")).subject == "u-1"


def test_a_tampered_token_is_refused():
    tokens = Tokens(SECRET, 600)
    token, _ = tokens.issue("u-1", GRANTS)
    header, payload, signature = _segments(token)
    upgraded = _payload(token) | {"permissions": [GRANTS[0].to_claim() | {"permission": 3}]}
    forged_payload = base64.urlsafe_b64encode(json.dumps(upgraded).encode()).rstrip(b"=").decode()
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    for forged in (f"{header}.{forged_payload}.{signature}", f"{header}.{payload}.{flipped}"):
        with pytest.raises(TokenRejected, match="invalid token claims: token signature is invalid"):
            tokens.verify(forged)
    assert tokens.verify(token).permissions == GRANTS  # the genuine one still is


@pytest.mark.parametrize("token", ["", "garbage", "a.b", "a.b.c.d", "Bearer"])
def test_what_is_no_jwt_at_all_gets_the_fragment_clients_match(token: str):
    with pytest.raises(TokenRejected) as refused:
        Tokens(SECRET, 600).verify(token)
    assert refused.value.message == (
        "invalid token claims: token is malformed: token contains an invalid number of segments"
    )


def test_three_segments_of_garbage_are_malformed():
    with pytest.raises(TokenRejected, match="invalid token claims: token is malformed"):
        Tokens(SECRET, 600).verify("not.a.jwt")


@pytest.mark.parametrize(
    "change",
    [
        {"exp": None},  # dropped below
        {"sub": ""},
        {"exp": "tomorrow"},
        {"permissions": [{"resource": "server", "permission": 9}]},
        {"permissions": "server"},
    ],
)
def test_claims_the_service_does_not_issue_are_refused(change: dict):
    payload = _valid_payload() | change
    if change == {"exp": None}:
        del payload["exp"]
    with pytest.raises(TokenRejected, match="invalid token claims"):
        Tokens(SECRET, 600).verify(_signed_with(payload, SECRET, "HS256"))


def test_the_secret_is_the_configured_one_or_derived_from_the_secrets_key():
    assert token_secret("configured-secret-16", None) == b"configured-secret-16"
    box = SecretBox(b"k" * 32)
    derived = token_secret("", box)
    assert derived is not None and len(derived) == 32 and derived not in (b"k" * 32,)
    assert token_secret("", SecretBox(b"k" * 32)) == derived  # every process agrees
    assert token_secret("", SecretBox(b"j" * 32)) != derived
    assert token_secret("", None) is None
    with pytest.raises(ValueError):
        Tokens(b"short", 600)
