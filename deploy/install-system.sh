#!/usr/bin/env bash
# Install the system packages parksense needs: Mosquitto, PostgreSQL and TimescaleDB.
# Installs only what is missing; safe to run again. Needs root (or sudo).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

WITH_BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --browser) WITH_BROWSER=1 ;;
    *) echo "unknown option: $arg" >&2; exit 2 ;;
  esac
done

log() { printf '[install] %s\n' "$*"; }

missing=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
need() { for p in "$@"; do have_pkg "$p" || missing+=("$p"); done; }

# mosquitto-dev, libmosquitto-dev and gcc build the broker plugin (deploy/mosquitto).
need mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev gcc libc6-dev postgresql python3-venv
if [ "$WITH_BROWSER" = 1 ]; then need chromium chromium-driver fonts-noto-cjk; fi

updated=0
apt_update() { if [ "$updated" = 0 ]; then log "apt-get update"; $SUDO apt-get update -qq; updated=1; fi; }

if [ "${#missing[@]}" -gt 0 ]; then
  apt_update
  log "installing ${missing[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The distribution's mosquitto service is not ours; parksense starts its own broker.
PG_BIN_DIR="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
PG_MAJOR="$(basename "$(dirname "$PG_BIN_DIR")")"
PG_CONFIG="$PG_BIN_DIR/pg_config"
if [ ! -x "$PG_CONFIG" ]; then PG_CONFIG="$(command -v pg_config || true)"; fi

timescale_installed() {
  local libdir
  libdir="$(/usr/bin/pg_config --pkglibdir 2>/dev/null || echo "/usr/lib/postgresql/$PG_MAJOR/lib")"
  ls "/usr/lib/postgresql/$PG_MAJOR/lib"/timescaledb*.so >/dev/null 2>&1 \
    || ls "$libdir"/timescaledb*.so >/dev/null 2>&1
}

if timescale_installed; then
  log "TimescaleDB present for PostgreSQL $PG_MAJOR"
  exit 0
fi

apt_update
if apt-cache show "postgresql-$PG_MAJOR-timescaledb" >/dev/null 2>&1; then
  log "installing postgresql-$PG_MAJOR-timescaledb"
  $SUDO apt-get install -y -qq --no-install-recommends "postgresql-$PG_MAJOR-timescaledb" >/dev/null
  exit 0
fi

# No binary package for this PostgreSQL: build Debian's own timescaledb source package.
log "building TimescaleDB from Debian's source package for PostgreSQL $PG_MAJOR"
$SUDO apt-get install -y -qq --no-install-recommends \
  "postgresql-server-dev-$PG_MAJOR" cmake make gcc dpkg-dev libssl-dev >/dev/null
work="$(mktemp -d)"
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial"
echo "deb-src http://deb.debian.org/debian trixie main" >"$work/sources.list"
APT_SRC=(-o "Dir::Etc::sourcelist=$work/sources.list" -o "Dir::Etc::sourceparts=-"
         -o "Dir::State::Lists=$work/lists" -o "APT::Get::List-Cleanup=0")
$SUDO apt-get "${APT_SRC[@]}" update -qq
(cd "$work" && apt-get "${APT_SRC[@]}" source -qq --download-only timescaledb >/dev/null \
  && dpkg-source --no-check -x ./*.dsc src >/dev/null)
cd "$work/src"
./bootstrap -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
  -DAPACHE_ONLY=ON -DSEND_TELEMETRY_DEFAULT=OFF -DPG_CONFIG="$PG_CONFIG" >/dev/null
make -C build -j"$(nproc)" >/dev/null
$SUDO make -C build install >/dev/null
log "TimescaleDB $(grep -m1 -oP '^version = \K[0-9.]+' version.config 2>/dev/null || echo '') installed"
