"""The Standard Webhooks scheme (standardwebhooks.com): `webhook-id`, `webhook-timestamp` and
`webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the bytes of the
endpoint's `whsec_<base64>` secret. Receivers verify with any Standard Webhooks library, or as
`verify` below does."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(secret, message_id, timestamp, body), "content-type": "application/json"}


def verify(secret: str, message_id: str, timestamp: str, body: bytes, signature_header: str) -> bool:
    """True when one of the header's space-separated `v1,` signatures is ours (constant-time compare)."""
    expected = signature(secret, message_id, int(timestamp), body)
    return any(hmac.compare_digest(expected, sent) for sent in signature_header.split())
