"""The identity rules: usernames, client-id prefixes, password hashes, the broker's files."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from base64 import b64decode
from pathlib import Path

import pytest

from services.core.access import (
    BrokerUser,
    CredentialKind,
    PlatformRole,
    client_id_prefix,
    hash_password,
    mosquitto_hash,
    render_broker_files,
    username,
    verify_password,
)


@pytest.mark.parametrize(
    ("kind", "subject", "expected"),
    [
        (CredentialKind.DEVICE, "f01-meter-1", "device.f01-meter-1"),
        (CredentialKind.GATEWAY, "f01", "gateway.f01"),
        (CredentialKind.READER, "hebi-tech", "reader.hebi-tech"),
        (CredentialKind.PLATFORM, "ingest", "parksense.ingest"),
    ],
)
def test_usernames_name_their_kind_and_subject(
    kind: CredentialKind, subject: str, expected: str
) -> None:
    """A username is the kind (or 'parksense' for the platform) and the subject."""
    assert username(kind, subject) == expected


def test_no_client_id_prefix_is_a_prefix_of_another_credentials() -> None:
    """Device 'd1' cannot use device 'd10''s client ids, nor ingest's."""
    users = [
        username(CredentialKind.DEVICE, "d1"),
        username(CredentialKind.DEVICE, "d10"),
        username(CredentialKind.DEVICE, "parksense"),
        username(CredentialKind.GATEWAY, "d1"),
        *(username(CredentialKind.PLATFORM, role.value) for role in PlatformRole),
    ]
    for one in users:
        for other in users:
            if one != other:
                assert not client_id_prefix(other).startswith(client_id_prefix(one))


def test_unknown_platform_role_is_refused() -> None:
    """Only the platform's own roles have platform credentials."""
    with pytest.raises(ValueError, match="nobody"):
        username(CredentialKind.PLATFORM, "nobody")


def test_password_verifies_against_its_hash_only() -> None:
    """The right password verifies; another does not."""
    digest = hash_password("secret", "saltsaltsalt", 101)
    assert verify_password("secret", "saltsaltsalt", digest, 101)
    assert not verify_password("Secret", "saltsaltsalt", digest, 101)


def test_mosquitto_passwd_uses_the_algorithm_and_layout_we_write(tmp_path: Path) -> None:
    """mosquitto_passwd's "$7$" is PBKDF2-SHA512 (64 bytes) in the layout ours has.

    That the broker accepts our hashes is shown end to end in tests/access.
    """
    tool = shutil.which("mosquitto_passwd")
    assert tool is not None, "mosquitto_passwd is missing: run deploy/install-system.sh"
    passwords = tmp_path / "passwords"
    subprocess.run([tool, "-c", "-b", str(passwords), "user", "s3cret"], check=True)
    line = passwords.read_text(encoding="utf-8").strip()
    _, _, iterations, salt64, hash64 = line.split(":", 1)[1].split("$")
    salt = b64decode(salt64)
    # mosquitto_passwd salts with random bytes, ours with text: same algorithm, same layout.
    digest = hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, int(iterations), 64)
    assert b64decode(hash64) == digest
    ours = mosquitto_hash("saltsaltsalt", hash_password("s3cret", "saltsaltsalt"), 101)
    assert ours.split("$")[1:3] == ["7", "101"]
    assert b64decode(ours.split("$")[3]) == b"saltsaltsalt"


def test_broker_files_list_users_grants_and_subscriptions() -> None:
    """Passwords for every user; ACL lines and subscription grants for users that have any."""
    files = render_broker_files(
        [
            BrokerUser("reader.p1", "$7$1$a$b", subscribe=("parksense/v1/p1/signals",)),
            BrokerUser("device.d1", "$7$1$c$d", publish=("parksense/v1/p1/f1/d1/telemetry",)),
            BrokerUser("parksense.sync", "$7$1$e$f"),
        ]
    )
    lines = [line for line in files.passwords.splitlines() if not line.startswith("#")]
    assert lines == ["device.d1:$7$1$c$d", "parksense.sync:$7$1$e$f", "reader.p1:$7$1$a$b"]
    assert "user device.d1\ntopic write parksense/v1/p1/f1/d1/telemetry\n" in files.acl
    assert "user reader.p1\ntopic read parksense/v1/p1/signals\n" in files.acl
    assert "parksense.sync" not in files.acl
    assert files.subscriptions.splitlines()[1:] == ["reader.p1 parksense/v1/p1/signals"]
