"""MQTT identity: who a credential is, how its password is hashed, what the broker is told.

A credential's username is ``{kind}.{subject}`` (``device.f01-meter-1``,
``gateway.f01``, ``reader.hebi-tech``, ``parksense.ingest``) and its client ids must start
with ``{username}.``; ids never hold a dot, so two credentials' prefixes never overlap and
no credential can take another's client id (Mosquitto: ``deploy/mosquitto/parksense_auth.c``;
EMQX: the authentication query in docs/security.md). What each credential may publish or
subscribe to is the database view ``mqtt_acl`` (migration 0013), the one home of the grants.

Passwords are 256-bit random tokens, hashed with PBKDF2-HMAC-SHA512 in the form both
Mosquitto (``$7$``) and EMQX (``pbkdf2``, sha512) verify.
"""

from __future__ import annotations

import hashlib
import hmac
from base64 import b64encode
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

# Mosquitto's own default (mosquitto_passwd). The broker hashes on every CONNECT and, on
# each reload, once per connected client; the passwords are random 256-bit tokens, which
# no iteration count makes stronger, so a high count would only cost broker time.
PBKDF2_ITERATIONS = 101
# Bytes of PBKDF2 output: Mosquitto compares a full SHA-512 block.
HASH_BYTES = 64
# Mosquitto 2.0 accepts exactly 12 bytes of salt; ours is 12 URL-safe characters (72 bits),
# text so that EMQX can take it from a column as it is.
SALT_CHARS = 12
# Actions of the ``mqtt_acl`` view.
PUBLISH = "publish"
SUBSCRIBE = "subscribe"


class CredentialKind(StrEnum):
    """Who a credential speaks for."""

    DEVICE = "device"
    GATEWAY = "gateway"
    READER = "reader"
    PLATFORM = "platform"


class PlatformRole(StrEnum):
    """The platform's own clients, each with a credential of its own."""

    INGEST = "ingest"
    API = "api"
    SIMULATOR = "simulator"
    # The maintenance process: shares park signals on MQTT (services/maintenance/sharing.py).
    MAINTENANCE = "maintenance"


# A platform credential is "parksense.{role}"; the others "{kind}.{subject}".
_PLATFORM_NAMESPACE = "parksense"
# The credential the broker sync renders (never stored) to see that a reload happened.
SYNC_PROBE_USERNAME = f"{_PLATFORM_NAMESPACE}.sync"


def username(kind: CredentialKind, subject: str) -> str:
    """Return the username of the credential of ``kind`` for ``subject``."""
    if kind is CredentialKind.PLATFORM:
        return f"{_PLATFORM_NAMESPACE}.{PlatformRole(subject).value}"
    return f"{kind.value}.{subject}"


def client_id_prefix(user: str) -> str:
    """Return the prefix every client id of ``user`` must start with."""
    return f"{user}."


def client_id(user: str, name: str) -> str:
    """Return a client id of ``user`` ending in ``name``."""
    return f"{client_id_prefix(user)}{name}"


def hash_password(password: str, salt: str, iterations: int = PBKDF2_ITERATIONS) -> bytes:
    """Return the PBKDF2-HMAC-SHA512 digest of ``password`` with ``salt``."""
    return hashlib.pbkdf2_hmac(
        "sha512", password.encode(), salt.encode(), iterations, dklen=HASH_BYTES
    )


def verify_password(password: str, salt: str, digest: bytes, iterations: int) -> bool:
    """Return whether ``password`` hashes to ``digest`` (constant-time comparison)."""
    return hmac.compare_digest(hash_password(password, salt, iterations), digest)


def mosquitto_hash(salt: str, digest: bytes, iterations: int) -> str:
    """Return the hash as a Mosquitto 2.0 password-file entry (``$7$``: PBKDF2-SHA512)."""
    return f"$7${iterations}${b64encode(salt.encode()).decode()}${b64encode(digest).decode()}"


@dataclass(frozen=True, slots=True)
class BrokerUser:
    """One credential as the broker must know it."""

    username: str
    password_hash: str  # in the broker's password-file format
    publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """The text of Mosquitto's password, ACL and subscription-grant files."""

    passwords: str
    acl: str
    subscriptions: str


_HEADER = "# Written by parksense from the mqtt_users and mqtt_acl views; edits are overwritten.\n"


def render_broker_files(users: Iterable[BrokerUser]) -> BrokerFiles:
    """Render the files that tell Mosquitto who may connect and what each may do."""
    passwords = [_HEADER]
    acl = [_HEADER]
    subscriptions = [_HEADER]
    for user in sorted(users, key=lambda u: u.username):
        passwords.append(f"{user.username}:{user.password_hash}\n")
        if not (user.publish or user.subscribe):
            continue
        acl.append(f"\nuser {user.username}\n")
        acl.extend(f"topic write {topic}\n" for topic in user.publish)
        acl.extend(f"topic read {topic}\n" for topic in user.subscribe)
        subscriptions.extend(f"{user.username} {topic}\n" for topic in user.subscribe)
    return BrokerFiles("".join(passwords), "".join(acl), "".join(subscriptions))
