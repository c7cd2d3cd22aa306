#!/usr/bin/env bash
# Install the built dbcrate where every OS user finds it, PostgreSQL's own user above all
# (archive_command and restore_command run as the cluster's owner, usually `postgres`,
# with a minimal PATH, and often cannot read a checkout under /root or a home folder).
#
#   npm run build && sudo bash deploy/install.sh
#
# Copies the runtime (bin/, dist/, production node_modules) to $PREFIX (default
# /opt/dbcrate), rebuilds the native archive_command client there so that its fallback
# points at the installed CLI, and puts two commands in $BINDIR (default /usr/local/bin):
#   dbcrate            the CLI (`dbcrate wal-push`, `dbcrate agent`, `dbcrate recover`, …)
#   dbcrate-wal-push   the native client for archive_command (falls back to dbcrate wal-push)
# Then checks that the postgres user can run both.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="${PREFIX:-/opt/dbcrate}"
BINDIR="${BINDIR:-/usr/local/bin}"
NODE="$(command -v node)"
say() { printf '==> %s\n' "$*"; }
die() { printf 'dbcrate install: error: %s\n' "$*" >&2; exit 1; }

[ -f "$ROOT/dist/services/cli/src/main.js" ] || die "not built: run \`npm run build\` in $ROOT first"
case "$PREFIX" in /*) ;; *) die "PREFIX must be an absolute path (got $PREFIX)" ;; esac
[ "$PREFIX" != "/" ] || die "PREFIX must not be /"

say "installing the runtime into $PREFIX"
mkdir -p "$PREFIX" "$BINDIR"
STAGE="$(mktemp -d "$PREFIX.new.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
cp -a "$ROOT/bin" "$ROOT/dist" "$ROOT/package.json" "$ROOT/package-lock.json" "$ROOT/native" "$ROOT/scripts" "$STAGE/"
cp -a "$ROOT/node_modules" "$STAGE/"
(cd "$STAGE" && npm prune --omit=dev --no-audit --no-fund >/dev/null 2>&1) || say "npm prune failed; keeping the full node_modules"
# Swap the new tree in whole, so a running archive_command never sees half an install.
if [ -e "$PREFIX" ]; then rm -rf "$PREFIX.old"; mv "$PREFIX" "$PREFIX.old"; fi
mv "$STAGE" "$PREFIX"
trap - EXIT
rm -rf "$PREFIX.old"
# built in place: the client's fallback runs the CLI by its installed path
(cd "$PREFIX" && "$NODE" scripts/build-native.mjs >/dev/null) || true
chmod -R a+rX,go-w "$PREFIX"

say "installing $BINDIR/dbcrate and $BINDIR/dbcrate-wal-push"
TMP="$(mktemp "$BINDIR/.dbcrate.XXXXXX")"
printf '#!/bin/sh\nexec %s %s/bin/dbcrate.js "$@"\n' "$NODE" "$PREFIX" > "$TMP"
chmod 0755 "$TMP" && mv -f "$TMP" "$BINDIR/dbcrate"
if [ -x "$PREFIX/dist/native/dbcrate-wal-push" ]; then
  install -m 0755 "$PREFIX/dist/native/dbcrate-wal-push" "$BINDIR/.dbcrate-wal-push.new"
  mv -f "$BINDIR/.dbcrate-wal-push.new" "$BINDIR/dbcrate-wal-push"
else
  say "no C compiler: $BINDIR/dbcrate-wal-push runs \`dbcrate wal-push\`"
  TMP="$(mktemp "$BINDIR/.dbcrate-wal-push.XXXXXX")"
  printf '#!/bin/sh\nexec %s %s/bin/dbcrate.js wal-push "$@"\n' "$NODE" "$PREFIX" > "$TMP"
  chmod 0755 "$TMP" && mv -f "$TMP" "$BINDIR/dbcrate-wal-push"
fi

if id postgres >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  for c in "$BINDIR/dbcrate --version" "$BINDIR/dbcrate-wal-push --help"; do
    runuser -u postgres -- $c >/dev/null 2>&1 || die "the postgres user cannot run $c (check that $NODE and $PREFIX are readable by it)"
  done
  say "ok: the postgres user runs $BINDIR/dbcrate and $BINDIR/dbcrate-wal-push"
fi
say "done: $("$BINDIR/dbcrate" --version)"
