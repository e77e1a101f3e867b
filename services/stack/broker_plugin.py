"""Build parksense's Mosquitto plugin (client ids, subscription grants, reloads) from source.

The plugin is a small C file in ``deploy/mosquitto``, compiled against the system's
Mosquitto headers (Debian's ``mosquitto-dev`` and ``libmosquitto-dev``) the first time a
broker starts; the result is cached by the hash of the source and the compiler flags, so a
changed source is rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

from services.stack.errors import MissingComponentError

logger = logging.getLogger(__name__)

PLUGIN_SOURCE = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto" / "parksense_auth.c"
_HEADERS = (Path("/usr/include/mosquitto_broker.h"), Path("/usr/include/mosquitto.h"))
# Warnings are errors: the plugin runs inside the broker, so a warning left in it is a bug
# that every client of the broker would share.
_CFLAGS = ("-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror")


def ensure_plugin(build_dir: Path, source: Path = PLUGIN_SOURCE) -> Path:
    """Return the compiled plugin in ``build_dir``, compiling it first if needed.

    Raises:
        MissingComponentError: No C compiler or no Mosquitto development headers.
    """
    digest = hashlib.sha256(source.read_bytes() + " ".join(_CFLAGS).encode()).hexdigest()[:12]
    target = build_dir.absolute() / f"parksense_auth-{digest}.so"
    if target.exists():
        return target
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise MissingComponentError("a C compiler", "the broker plugin is built with cc")
    missing = [str(h) for h in _HEADERS if not h.exists()]
    if missing:
        raise MissingComponentError("mosquitto-dev and libmosquitto-dev", ", ".join(missing))
    build_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    result = subprocess.run(
        [compiler, *_CFLAGS, "-o", str(tmp), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise MissingComponentError(
            "a working Mosquitto plugin build", result.stderr.strip().splitlines()[-1]
        )
    tmp.replace(target)
    logger.info("Built the broker plugin %s", target)
    return target
