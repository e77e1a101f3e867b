"""API access rules: scopes and how a secret (API key or session token) is stored.

Pure: no clock, no randomness, no I/O. Keys and session tokens are high-entropy random
strings made by the storage layer; only their SHA-256 digest is ever stored.
"""

from __future__ import annotations

import hashlib
import hmac

from schemas.access import MAX_SECRET_CHARS, Scope

# Prefixes make a leaked secret recognisable (secret scanners, log greps) and tell keys
# from session tokens at a glance.
KEY_PREFIX = "psk_"
SESSION_PREFIX = "pss_"
# Bytes of randomness in a key or token: 256 bits, so an unsalted fast hash is safe to store
# (nobody can enumerate the space), unlike a password that needs scrypt.
SECRET_BYTES = 32

__all__ = [
    "KEY_PREFIX",
    "MAX_SECRET_CHARS",
    "SECRET_BYTES",
    "SESSION_PREFIX",
    "Scope",
    "digest_matches",
    "plausible_secret",
    "secret_digest",
]


def secret_digest(secret: str) -> bytes:
    """Return the SHA-256 digest under which a key or session token is stored."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def digest_matches(secret: str, digest: bytes) -> bool:
    """Return True when ``secret`` hashes to ``digest``, in constant time."""
    return hmac.compare_digest(secret_digest(secret), digest)


def plausible_secret(secret: str) -> bool:
    """Return True when ``secret`` is worth looking up (bounded, printable ASCII)."""
    return 0 < len(secret) <= MAX_SECRET_CHARS and secret.isascii() and secret.isprintable()
