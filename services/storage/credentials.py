"""MQTT credentials in PostgreSQL: issue (or rotate), revoke, and read what the broker needs."""

from __future__ import annotations

import secrets
from collections import defaultdict
from dataclasses import dataclass

import psycopg

from services.core.access import (
    PBKDF2_ITERATIONS,
    PUBLISH,
    SALT_CHARS,
    SUBSCRIBE,
    BrokerUser,
    CredentialKind,
    client_id_prefix,
    hash_password,
    mosquitto_hash,
    username,
    verify_password,
)
from services.storage.errors import StorageError

# Random bytes in a password (256 bits).
_PASSWORD_BYTES = 32

# Where each kind's subject must be registered for a credential to be issued.
_SUBJECT_TABLES = {
    CredentialKind.DEVICE: ("devices", "device_id"),
    CredentialKind.GATEWAY: ("factories", "factory_id"),
    CredentialKind.READER: ("parks", "park_id"),
}


class UnknownSubjectError(StorageError):
    """The device, factory or park a credential is asked for is not registered."""

    def __init__(self, kind: CredentialKind, subject: str) -> None:
        """Name what is missing."""
        noun = {"device": "device", "gateway": "factory", "reader": "park"}[kind.value]
        super().__init__(f"{noun} {subject!r} is not registered")
        self.kind = kind
        self.subject = subject


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """A credential as issued: the only time its password is known."""

    username: str
    password: str
    client_id_prefix: str
    topics: list[str]


def new_password() -> str:
    """Return a fresh random password (URL-safe text, 256 bits)."""
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def new_salt() -> str:
    """Return a fresh random salt of the length the broker accepts."""
    return secrets.token_urlsafe(SALT_CHARS * 3 // 4)


def issue_credential(
    conn: psycopg.Connection,
    kind: CredentialKind,
    subject: str,
    password: str | None = None,
) -> IssuedCredential:
    """Issue the credential of ``kind`` for ``subject``, replacing (rotating) any earlier one.

    Args:
        conn: An open connection; the change is committed here.
        kind: What the credential speaks for.
        subject: The device, factory or park id, or the platform role.
        password: The password to store; a new random one when None.

    Raises:
        UnknownSubjectError: The subject is not registered.
    """
    user = username(kind, subject)
    password = password or new_password()
    salt = new_salt()
    digest = hash_password(password, salt, PBKDF2_ITERATIONS)
    with conn.transaction():
        if kind in _SUBJECT_TABLES:
            table, column = _SUBJECT_TABLES[kind]
            found = conn.execute(
                f"SELECT 1 FROM {table} WHERE {column} = %s FOR KEY SHARE", (subject,)
            ).fetchone()
            if found is None:
                raise UnknownSubjectError(kind, subject)
        conn.execute(
            "INSERT INTO mqtt_credentials (username, kind, subject, iterations, salt, hash)"
            " VALUES (%s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (username) DO UPDATE SET iterations = excluded.iterations,"
            " salt = excluded.salt, hash = excluded.hash, issued_at = now()",
            (user, kind.value, subject, PBKDF2_ITERATIONS, salt, digest),
        )
        topics = credential_topics(conn, user)
    return IssuedCredential(user, password, client_id_prefix(user), topics)


def credential_topics(conn: psycopg.Connection, user: str) -> list[str]:
    """Return the topics (or filters) ``user`` may publish to, then those it may subscribe to."""
    rows = conn.execute(
        "SELECT topic FROM mqtt_acl WHERE username = %s ORDER BY action, topic", (user,)
    ).fetchall()
    return [row[0] for row in rows]


def revoke_credential(conn: psycopg.Connection, kind: CredentialKind, subject: str) -> bool:
    """Delete the credential of ``kind`` for ``subject``; return whether there was one."""
    with conn.transaction():
        cur = conn.execute(
            "DELETE FROM mqtt_credentials WHERE username = %s", (username(kind, subject),)
        )
    return cur.rowcount > 0


def platform_password_valid(conn: psycopg.Connection, role: str, password: str) -> bool:
    """Return whether the stored credential of platform ``role`` has ``password``."""
    row = conn.execute(
        "SELECT salt, hash, iterations FROM mqtt_credentials WHERE username = %s",
        (username(CredentialKind.PLATFORM, role),),
    ).fetchone()
    return row is not None and verify_password(password, row[0], bytes(row[1]), row[2])


def broker_users(conn: psycopg.Connection) -> list[BrokerUser]:
    """Return every credential that may connect now, with its grants, in one snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        users = conn.execute(
            "SELECT username, salt, hash, iterations FROM mqtt_users ORDER BY username"
        ).fetchall()
        grants: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for user, action, topic in conn.execute(
            "SELECT username, action, topic FROM mqtt_acl ORDER BY username, action, topic"
        ):
            grants[user][action].append(topic)
    return [
        BrokerUser(
            username=user,
            password_hash=mosquitto_hash(salt, bytes(digest), iterations),
            publish=tuple(grants[user][PUBLISH]),
            subscribe=tuple(grants[user][SUBSCRIBE]),
        )
        for user, salt, digest, iterations in users
    ]
