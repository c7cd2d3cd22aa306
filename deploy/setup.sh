#!/usr/bin/env bash
# Set up a Debian 12 machine for dbcrate development, tests and the demo: install what is
# missing (PostgreSQL 15 server + client tools, Redis, NATS, OpenSSH server, GnuPG, zstd,
# pgBackRest, build tools for native modules), start the services whose ports do not
# answer, then `npm ci`. Idempotent; on a ready machine it only checks (and runs npm ci
# when the lockfile changed). Needs root (or sudo) only when it has to install or start
# something. Works without a TTY.
#
#   bash deploy/setup.sh [--skip-npm] [--force-npm] [--use-docker] [--no-pg-trust]
#
#   --skip-npm     do not run npm ci
#   --force-npm    run npm ci even when node_modules matches the lockfile
#   --use-docker   start missing services with `docker compose` (docker-compose.yml)
#                  instead of the Debian packages' daemons; packages are still installed,
#                  since tests need initdb, sshd, gpg, zstd and pgbackrest locally
#   --no-pg-trust  never touch pg_hba.conf (see ensure_pg_access)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PG_MAJOR=15
# Overridable only to test this script beside running services; the project expects the defaults.
PG_CLUSTER="${DBCRATE_SETUP_PG_CLUSTER:-main}"
PG_PORT="${DBCRATE_SETUP_PG_PORT:-5432}"
REDIS_PORT="${DBCRATE_SETUP_REDIS_PORT:-6379}"
NATS_PORT="${DBCRATE_SETUP_NATS_PORT:-4222}"
NATS_STORE="${DBCRATE_SETUP_NATS_STORE:-/var/lib/nats-server}"
NODE_MIN_MAJOR=20
SKIP_NPM=0
FORCE_NPM=0
USE_DOCKER=0
PG_TRUST=1
for arg in "$@"; do
  case "$arg" in
    --skip-npm) SKIP_NPM=1 ;;
    --force-npm) FORCE_NPM=1 ;;
    --use-docker) USE_DOCKER=1 ;;
    --no-pg-trust) PG_TRUST=0 ;;
    -h | --help)
      sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "setup.sh: unknown option $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

export DEBIAN_FRONTEND=noninteractive
log() { printf '==> %s\n' "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
die() {
  printf 'setup.sh: %s\n' "$*" >&2
  exit 1
}

IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1
# Run as root: directly, or through sudo (non-interactive callers need passwordless sudo).
as_root() {
  if [ "$IS_ROOT" = 1 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "this step needs root: re-run as root or with sudo ($*)"
  fi
}

# True when something accepts TCP connections on 127.0.0.1:$1 (bash's /dev/tcp: no netcat needed).
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" >/dev/null 2>&1; }

wait_port() {
  local port=$1 what=$2 log_hint=$3 i
  for i in $(seq 1 60); do
    port_open "$port" && return 0
    sleep 0.5
  done
  die "$what did not start listening on 127.0.0.1:$port within 30 s; see $log_hint"
}

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

has_systemd() { [ -d /run/systemd/system ]; }

# ---------------------------------------------------------------------------- checks
[ -r /etc/os-release ] && . /etc/os-release
if [ "${ID:-}" != debian ]; then
  log "warning: this script targets Debian 12; found ${PRETTY_NAME:-an unknown system}. Continuing."
elif [ "${VERSION_ID:-}" != 12 ]; then
  log "warning: this script targets Debian 12; found Debian ${VERSION_ID:-?}. Continuing."
fi
command -v dpkg-query >/dev/null 2>&1 || die "dpkg/apt not found: this script needs a Debian system"

log "Checking Node.js (need ${NODE_MIN_MAJOR} or newer)"
NODE_BIN="$(command -v node || true)"
if [ -z "$NODE_BIN" ]; then
  die "Node.js is not installed (or not on PATH). dbcrate needs Node.js ${NODE_MIN_MAJOR}+; Debian 12's own
  nodejs package is 18, too old. Install Node.js 20 from NodeSource (https://github.com/nodesource/distributions)
  or with nvm, then re-run. If it is installed for your user only (nvm) and you use sudo, run:
  sudo env PATH=\"\$PATH\" bash deploy/setup.sh"
fi
NODE_VERSION="$("$NODE_BIN" -p 'process.versions.node')"
NODE_MAJOR="${NODE_VERSION%%.*}"
if [ "$NODE_MAJOR" -lt "$NODE_MIN_MAJOR" ]; then
  die "Node.js $NODE_VERSION at $NODE_BIN is too old: dbcrate needs ${NODE_MIN_MAJOR} or newer (package.json engines).
  Install Node.js 20 from NodeSource (https://github.com/nodesource/distributions) or with nvm, then re-run."
fi
ok "node $NODE_VERSION ($NODE_BIN)"
NPM_BIN="$(dirname "$NODE_BIN")/npm"
[ -x "$NPM_BIN" ] || NPM_BIN="$(command -v npm || true)"
[ -n "$NPM_BIN" ] || die "npm not found next to $NODE_BIN nor on PATH; install npm with Node.js"

# ---------------------------------------------------------------------------- packages
# package[:alternative already satisfying it]
WANTED=(
  "postgresql-${PG_MAJOR}:postgresql"
  "postgresql-client-${PG_MAJOR}:postgresql-client"
  redis-server
  nats-server
  openssh-server
  gnupg
  zstd
  pgbackrest
  gcc
  g++
  make
  python3
  ca-certificates
  openssl
)
MISSING=()
for spec in "${WANTED[@]}"; do
  pkg="${spec%%:*}"
  alt="${spec#*:}"
  if pkg_installed "$pkg"; then
    continue
  fi
  # The metapackage alone is not enough when it points at another major; check the binary too.
  if [ "$alt" != "$spec" ] && pkg_installed "$alt" && [ -x "/usr/lib/postgresql/${PG_MAJOR}/bin/pg_dump" ] &&
    { [ "$pkg" != "postgresql-${PG_MAJOR}" ] || [ -x "/usr/lib/postgresql/${PG_MAJOR}/bin/initdb" ]; }; then
    continue
  fi
  MISSING+=("$pkg")
done

log "Checking Debian packages"
if [ "${#MISSING[@]}" -eq 0 ]; then
  ok "all present (PostgreSQL ${PG_MAJOR}, redis-server, nats-server, openssh-server, gnupg, zstd, pgbackrest, openssl, build tools)"
else
  log "Installing: ${MISSING[*]}"
  as_root apt-get update -q
  if ! apt-cache show "postgresql-${PG_MAJOR}" >/dev/null 2>&1; then
    die "postgresql-${PG_MAJOR} is not available from your apt sources (Debian 12 ships it). On other releases
  add the PostgreSQL project's signed repository (PGDG) first:
    apt-get install -y postgresql-common && /usr/share/postgresql-common/pgdg/apt.postgresql.org.sh
  then re-run this script."
  fi
  as_root apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${MISSING[@]}"
  ok "installed ${MISSING[*]}"
fi
# The OpenSSH server is only needed as a binary: tests start their own sshd on a loopback port.

# ---------------------------------------------------------------------------- services
DOCKER_OK=0
if [ "$USE_DOCKER" = 1 ]; then
  if docker compose version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    DOCKER_OK=1
  else
    log "warning: --use-docker given but 'docker compose' does not work here; using the Debian packages"
  fi
fi

compose_up() {
  log "Starting $1 with docker compose"
  (cd "$REPO" && as_root docker compose up -d "$1")
}

start_postgres() {
  if [ "$DOCKER_OK" = 1 ]; then
    compose_up postgres
    return
  fi
  if ! pg_lsclusters -h 2>/dev/null | awk '{print $1"/"$2}' | grep -qx "${PG_MAJOR}/${PG_CLUSTER}"; then
    log "Creating PostgreSQL cluster ${PG_MAJOR}/${PG_CLUSTER} on port ${PG_PORT}"
    as_root pg_createcluster -p "$PG_PORT" "${PG_MAJOR}" "$PG_CLUSTER"
  fi
  log "Starting PostgreSQL cluster ${PG_MAJOR}/${PG_CLUSTER}"
  if has_systemd; then
    as_root systemctl start "postgresql@${PG_MAJOR}-${PG_CLUSTER}"
  else
    as_root pg_ctlcluster --skip-systemctl-redirect "${PG_MAJOR}" "$PG_CLUSTER" start
  fi
}

start_redis() {
  if [ "$DOCKER_OK" = 1 ]; then
    compose_up redis
    return
  fi
  log "Starting Redis"
  if has_systemd; then
    as_root systemctl start redis-server
  elif id redis >/dev/null 2>&1; then
    # Not as root: the package's data and log directories belong to the redis user.
    as_root runuser -u redis -- redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
      --dir /var/lib/redis --logfile /var/log/redis/redis-server.log --pidfile "/var/lib/redis/redis-server-$REDIS_PORT.pid"
  else
    as_root redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT"
  fi
}

start_nats() {
  if [ "$DOCKER_OK" = 1 ]; then
    compose_up nats
    return
  fi
  # The package's own unit/config has no JetStream, so start it with -js explicitly.
  log "Starting NATS with JetStream"
  # The pid file makes --oknodo mean "this instance runs", not "any nats-server runs".
  as_root mkdir -p "$NATS_STORE"
  as_root start-stop-daemon --start --oknodo --background --make-pidfile --pidfile "/run/nats-server-$NATS_PORT.pid" \
    --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$NATS_STORE" -l /var/log/nats-server.log
}

log "Checking services"
if port_open "$PG_PORT"; then ok "PostgreSQL answers on 127.0.0.1:$PG_PORT"; else
  start_postgres
  wait_port "$PG_PORT" PostgreSQL "/var/log/postgresql/postgresql-${PG_MAJOR}-${PG_CLUSTER}.log"
  ok "PostgreSQL started on 127.0.0.1:$PG_PORT"
fi
if port_open "$REDIS_PORT"; then ok "Redis answers on 127.0.0.1:$REDIS_PORT"; else
  start_redis
  wait_port "$REDIS_PORT" Redis /var/log/redis/redis-server.log
  ok "Redis started on 127.0.0.1:$REDIS_PORT"
fi
if port_open "$NATS_PORT"; then ok "NATS answers on 127.0.0.1:$NATS_PORT"; else
  start_nats
  wait_port "$NATS_PORT" NATS /var/log/nats-server.log
  ok "NATS (JetStream) started on 127.0.0.1:$NATS_PORT"
fi

# Local tests and the control plane's dev config connect as postgres@127.0.0.1 without a
# password (the development machines' setup). Debian's default is scram for TCP, so when
# that login fails, trust loopback connections in the local cluster — a development setting.
ensure_pg_access() {
  local psql="/usr/lib/postgresql/${PG_MAJOR}/bin/psql"
  [ -x "$psql" ] || psql="$(command -v psql)"
  if env -u PGPASSWORD -u PGHOST -u PGSERVICE "$psql" -X -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atc 'SELECT 1' >/dev/null 2>&1; then
    ok "postgres@127.0.0.1:$PG_PORT accepts local test connections"
    return
  fi
  local hba="/etc/postgresql/${PG_MAJOR}/${PG_CLUSTER}/pg_hba.conf"
  if [ "$PG_TRUST" = 0 ] || [ "$DOCKER_OK" = 1 ] || ! as_root test -f "$hba"; then
    log "warning: cannot log in as postgres@127.0.0.1:$PG_PORT without a password; tests that use the shared server need"
    log "         'host all all 127.0.0.1/32 trust' in pg_hba.conf (or run without --no-pg-trust)"
    return
  fi
  if ! as_root grep -q 'dbcrate deploy/setup.sh' "$hba"; then
    log "Allowing password-less loopback connections in $hba (development machine)"
    local tmp
    tmp="$(mktemp)"
    {
      echo '# added by dbcrate deploy/setup.sh: trust loopback TCP for local development and tests'
      echo 'host    all             all             127.0.0.1/32            trust'
      echo 'host    all             all             ::1/128                 trust'
      as_root cat "$hba"
    } >"$tmp"
    as_root cp "$tmp" "$hba"
    rm -f "$tmp"
    if has_systemd; then as_root systemctl reload "postgresql@${PG_MAJOR}-${PG_CLUSTER}"; else
      as_root pg_ctlcluster --skip-systemctl-redirect "${PG_MAJOR}" "$PG_CLUSTER" reload
    fi
    sleep 1
  fi
  if env -u PGPASSWORD "$psql" -X -w -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atc 'SELECT 1' >/dev/null 2>&1; then
    ok "postgres@127.0.0.1:$PG_PORT accepts local test connections"
  else
    log "warning: still cannot log in as postgres@127.0.0.1:$PG_PORT; check $hba"
  fi
}
ensure_pg_access

# ---------------------------------------------------------------------------- npm
if [ "$SKIP_NPM" = 1 ]; then
  log "Skipping npm ci (--skip-npm)"
  log "Done."
  exit 0
fi

# node_modules is reinstalled only when the lockfile, package.json or Node.js changed,
# so that re-running this script is fast.
STAMP="$REPO/node_modules/.dbcrate-setup-stamp"
want_stamp="$(cat "$REPO/package.json" "$REPO/package-lock.json" | sha256sum | cut -d' ' -f1) node-$NODE_VERSION"
if [ "$FORCE_NPM" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want_stamp" ]; then
  ok "node_modules matches package-lock.json (use --force-npm to reinstall)"
  log "Done."
  exit 0
fi

if command -v pgrep >/dev/null 2>&1; then
  for i in $(seq 1 120); do
    pgrep -f "npm (ci|install)" >/dev/null 2>&1 || break
    [ "$i" = 1 ] && log "Waiting for another npm install/ci to finish"
    sleep 5
  done
fi

# As the owner of the checkout, so that `sudo bash deploy/setup.sh` leaves no root-owned files.
OWNER="$(stat -c %U "$REPO")"
log "Running npm ci in $REPO (as $OWNER)"
if [ "$IS_ROOT" = 1 ] && [ "$OWNER" != root ] && [ "$OWNER" != UNKNOWN ]; then
  (cd "$REPO" && runuser -u "$OWNER" -- env PATH="$(dirname "$NODE_BIN"):$PATH" "$NPM_BIN" ci --no-audit --no-fund)
  runuser -u "$OWNER" -- sh -c "printf '%s\n' '$want_stamp' > '$STAMP'"
else
  (cd "$REPO" && env PATH="$(dirname "$NODE_BIN"):$PATH" "$NPM_BIN" ci --no-audit --no-fund)
  printf '%s\n' "$want_stamp" >"$STAMP"
fi
ok "npm ci done"
log "Done."
