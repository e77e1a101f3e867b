"""A network namespace joined to the host by a veth pair, for cutting one process off.

The test's own two hosts only: the host end and the namespace end of a /30 in
10.231.0.0/16 that no interface uses yet. The namespace has no other interface (but its
loopback) and no default route, so nothing it sends leaves the pair.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import uuid
from collections.abc import Sequence

# The private range the pairs take their /30 from.
_SECOND_OCTETS = "10.231"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=30)


def netns_unavailable() -> str | None:
    """Return why network namespaces cannot be made here, or None when they can."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) on PATH"
    probe = f"psprobe{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _free_subnet() -> int:
    """Return a third octet x such that no address of 10.231.x.0/24 is in use here."""
    used = _ip("-4", "-o", "addr").stdout + _ip("-4", "route").stdout
    candidates = [x for x in range(256) if f"{_SECOND_OCTETS}.{x}." not in used]
    return random.choice(candidates)


class VethLink:
    """A namespace with one end of a veth pair; the other end stays on the host."""

    def __init__(self) -> None:
        """Create the namespace and the pair, addressed and up."""
        tag = uuid.uuid4().hex[:6]
        self.namespace = f"ps-{tag}"
        self.host_if = f"vps{tag}h"
        self.ns_if = f"vps{tag}n"
        x = _free_subnet()
        self.host_address = f"{_SECOND_OCTETS}.{x}.1"
        self.ns_address = f"{_SECOND_OCTETS}.{x}.2"
        _ip("netns", "add", self.namespace)
        try:
            _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _ip("link", "set", self.ns_if, "netns", self.namespace)
            _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_if)
            _ip("link", "set", self.host_if, "up")
            self._in_ns("addr", "add", f"{self.ns_address}/30", "dev", self.ns_if)
            self._in_ns("link", "set", self.ns_if, "up")
            self._in_ns("link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    @property
    def exec_prefix(self) -> Sequence[str]:
        """The command prefix that runs a program inside the namespace."""
        return ("ip", "netns", "exec", self.namespace)

    def _in_ns(self, *args: str) -> None:
        _ip("-n", self.namespace, *args)

    def cut(self) -> None:
        """Take the namespace's end down: its packets go nowhere, the host's too."""
        self._in_ns("link", "set", self.ns_if, "down")

    def restore(self) -> None:
        """Bring the namespace's end back up (its address stays)."""
        self._in_ns("link", "set", self.ns_if, "up")

    def delete(self) -> None:
        """Delete the namespace (which deletes the pair), and the host end if it is left."""
        _ip("netns", "del", self.namespace, check=False)
        _ip("link", "del", self.host_if, check=False)
