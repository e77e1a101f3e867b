"""Issue, rotate and revoke MQTT credentials so that the change is in force on return."""

from __future__ import annotations

import psycopg

from services.access.sync import BrokerSync
from services.core.access import CredentialKind
from services.storage.credentials import IssuedCredential, issue_credential, revoke_credential


def issue(
    conninfo: str, broker: BrokerSync, kind: CredentialKind, subject: str
) -> IssuedCredential:
    """Issue (or rotate) a credential and put it in force at the broker.

    Raises:
        UnknownSubjectError: The device, factory or park is not registered.
        BrokerReloadError: Stored, but the broker did not confirm the reload.
    """
    with psycopg.connect(conninfo) as conn:
        issued = issue_credential(conn, kind, subject)
    broker.sync(conninfo)
    return issued


def revoke(conninfo: str, broker: BrokerSync, kind: CredentialKind, subject: str) -> bool:
    """Revoke a credential and drop its connections; return whether there was one.

    Raises:
        BrokerReloadError: Deleted, but the broker did not confirm the reload.
    """
    with psycopg.connect(conninfo) as conn:
        revoked = revoke_credential(conn, kind, subject)
    if revoked:
        broker.sync(conninfo)
    return revoked
