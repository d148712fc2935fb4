"""Webhook signatures in the manner of the Standard Webhooks spec (standardwebhooks.com).

A secret is ``whsec_`` + base64 of 32 random bytes; the HMAC key is those bytes. Each
request carries ``webhook-id`` (the event id: the same on every retry), ``webhook-timestamp``
(Unix seconds of this attempt) and ``webhook-signature``: ``v1,`` + base64 of
HMAC-SHA256(key, f"{id}.{timestamp}.{body}"), space-separated when two secrets sign (the
overlap after a rotation). Pure functions: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable

PREFIX = "whsec_"
TOLERANCE_SECONDS = 5 * 60
"""How far a receiver should accept a timestamp from its own clock (replay protection)."""


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret[len(PREFIX):], validate=True)


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256>`` of ``{msg_id}.{timestamp}.{body}``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets_: Iterable[str], msg_id: str, timestamp: int, body: bytes) -> dict:
    """The three Standard Webhooks headers, signed with every secret given (newest first)."""
    signatures = " ".join(signature(s, msg_id, timestamp, body) for s in secrets_)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": signatures, "content-type": "application/json"}


def verify(secret: str, header: dict, body: bytes, *, now: int,
           tolerance: int = TOLERANCE_SECONDS) -> bool:
    """What a receiver does: the timestamp is recent and one ``v1`` signature matches."""
    lower = {k.lower(): v for k, v in header.items()}
    try:
        msg_id, timestamp = lower["webhook-id"], int(lower["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate)
               for candidate in lower.get("webhook-signature", "").split())


def body(event_id: str, event_type: str, created_at: str, data: dict) -> bytes:
    """The JSON body: ``{"id", "type", "timestamp", "data"}``, byte-identical on every retry
    (sorted keys, no spaces)."""
    return json.dumps({"id": event_id, "type": event_type, "timestamp": created_at,
                       "data": data}, sort_keys=True, separators=(",", ":")).encode()
