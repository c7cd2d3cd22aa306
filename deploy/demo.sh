#!/usr/bin/env bash
# The main job, end to end on this machine: a throwaway PostgreSQL with a sample
# database, a fresh organisation key pair, an encrypted backup into a local folder,
# then a restore into a new database and a check that every table matches. Then
# point-in-time recovery: WAL archived through the agent, a base backup, writes and a
# DROP TABLE, and a recovery to the moment before the drop, checked table by table.
# Everything lives under ./demo (keys, backups) and a temporary cluster that is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
DEMO="$ROOT/demo"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
PORT="${DBCRATE_DEMO_PORT:-54329}"
[ -x "$ROOT/dist/services/cli/src/main.js" ] || [ -f "$ROOT/dist/services/cli/src/main.js" ] || npm run build --silent
mkdir -p "$DEMO"
CLUSTER="$(mktemp -d /tmp/dbcrate-demo-pg.XXXXXX)"
chmod 755 "$CLUSTER"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$CLUSTER"
AGENT_PID=""
cleanup() {
  # runuser does not pass signals on to the agent it started: stop the agent itself.
  if [ -n "$AGENT_PID" ]; then pkill -TERM -f -- "agent --pgdata $CLUSTER/data" 2>/dev/null || true; fi
  for d in "$CLUSTER/data" "$CLUSTER/recovered"; do
    if [ -f "$d/postmaster.pid" ]; then as_pg "$PGBIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true; fi
  done
  rm -rf "$CLUSTER"
}
trap cleanup EXIT

if [ ! -f "$DEMO/keys/demo.pub.asc" ]; then
  echo "==> generating the organisation key pair in $DEMO/keys"
  export DBCRATE_DEMO_PASSPHRASE="${DBCRATE_DEMO_PASSPHRASE:-demo-passphrase-change-me}"
  node bin/dbcrate.js keys generate --name demo --out "$DEMO/keys" --passphrase-env DBCRATE_DEMO_PASSPHRASE
fi
if [ ! -f "$DEMO/keys/demo-host.sign.key.asc" ]; then
  echo "==> generating this host's signing key (backups are signed; readers trust its public key)"
  node bin/dbcrate.js keys generate-signing --name demo-host --out "$DEMO/keys"
fi
# Producers sign with the host key, readers accept only what it signed (docs/signing.md).
export DBCRATE_SIGNING_KEY="$DEMO/keys/demo-host.sign.key.asc"
export DBCRATE_TRUST="$DEMO/keys/demo-host.sign.pub.asc"
echo "==> starting a throwaway PostgreSQL ($("$PGBIN/postgres" --version)) on port $PORT"
as_pg "$PGBIN/initdb" -D "$CLUSTER/data" -U postgres --auth=trust >/dev/null
# WAL archiving through dbcrate: the native client when it was built, else the CLI itself.
rm -rf "$DEMO/pitr"; mkdir -p "$DEMO/pitr"
WALPUSH="$ROOT/dist/native/dbcrate-wal-push"
[ -x "$WALPUSH" ] || WALPUSH="$(command -v node) $ROOT/bin/dbcrate.js wal-push"
printf 'to: file://%s/pitr\nrecipient: [%s/keys/demo.pub.asc]\nsigning-key: %s/keys/demo-host.sign.key.asc\n' \
  "$DEMO" "$DEMO" "$DEMO" > "$DEMO/wal.yaml"
printf "archive_mode = on\narchive_command = '%s %%p --config %s/wal.yaml'\n" "$WALPUSH" "$DEMO" >> "$CLUSTER/data/postgresql.conf"
# PostgreSQL's own user runs archive_command and restore_command: it reads the keys and writes the archive.
if [ "$(id -u)" = 0 ]; then chown -R postgres "$DEMO/pitr" "$DEMO/keys" "$DEMO/wal.yaml"; fi
as_pg "$PGBIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/log" -w \
  -o "-p $PORT -k $CLUSTER -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
DB="postgres://postgres@127.0.0.1:$PORT"

echo "==> creating sample database 'shop' (pgbench, scale 5, plus a text table)"
"$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres shop
"$PGBIN/pgbench" -q -i -s 5 -h 127.0.0.1 -p "$PORT" -U postgres shop >/dev/null 2>&1
"$PGBIN/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres -d shop -c \
  "CREATE TABLE notes AS SELECT g AS id, md5(g::text) || repeat(chr(65 + g % 26), g % 50) AS body, now() AS at FROM generate_series(1, 100000) g"

export DBCRATE_DEMO_PASSPHRASE="${DBCRATE_DEMO_PASSPHRASE:-demo-passphrase-change-me}"

echo "==> backing up 'shop' to file://$DEMO/backups"
SNAP="$(node bin/dbcrate.js backup --db "$DB/shop" --to "file://$DEMO/backups" --recipient "$DEMO/keys/demo.pub.asc")"
echo "snapshot: $SNAP"
node bin/dbcrate.js snapshots --from "file://$DEMO/backups" --database-id shop

echo "==> restoring $SNAP into a new database 'shop_restored'"
"$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres shop_restored
node bin/dbcrate.js restore "$SNAP" --database-id shop --from "file://$DEMO/backups" --key "$DEMO/keys/demo.key.asc" \
  --passphrase-env DBCRATE_DEMO_PASSPHRASE --to "$DB/shop_restored"

echo "==> comparing every table"
sum() {
  "$PGBIN/psql" -At -h 127.0.0.1 -p "$PORT" -U postgres -d "$1" -c \
    "SELECT string_agg(t || ':' || c, ' ' ORDER BY t) FROM (
       SELECT 'pgbench_accounts' t, md5(string_agg(a::text, '|' ORDER BY aid)) c FROM pgbench_accounts a
       UNION ALL SELECT 'pgbench_branches', md5(string_agg(b::text, '|' ORDER BY bid)) FROM pgbench_branches b
       UNION ALL SELECT 'pgbench_tellers', md5(string_agg(x::text, '|' ORDER BY tid)) FROM pgbench_tellers x
       UNION ALL SELECT 'notes', md5(string_agg(n::text, '|' ORDER BY id)) FROM notes n) s"
}
A="$(sum shop)"; B="$(sum shop_restored)"
if [ "$A" != "$B" ]; then echo "MISMATCH:"; echo " source:   $A"; echo " restored: $B"; exit 1; fi
echo "restore check passed: $(echo "$A" | wc -w) tables identical"
echo "==> the backup opens without dbcrate too:"
echo "    gpg --decrypt $DEMO/backups/shop/dumps/*/$SNAP.dump.zst.pgp | zstd -d | pg_restore -d NEWDB"
echo "==> and its signature checks with stock gpg (after gpg --import $DBCRATE_TRUST):"
echo "    gpg --verify $DEMO/backups/shop/dumps/*/$SNAP.manifest.json.sig $DEMO/backups/shop/dumps/*/$SNAP.manifest.json"

echo "==> point-in-time recovery: agent, base backup, writes, a DROP TABLE, recovery to just before it"
as_pg node bin/dbcrate.js agent --pgdata "$CLUSTER/data" --config "$DEMO/wal.yaml" 2>"$CLUSTER/agent.log" &
AGENT_PID=$!
BASE="$(as_pg node bin/dbcrate.js basebackup --db "$DB/postgres" --to "file://$DEMO/pitr" --recipient "$DEMO/keys/demo.pub.asc" --progress off)"
echo "base backup: $BASE"
"$PGBIN/pgbench" -n -T 5 -c 2 -h 127.0.0.1 -p "$PORT" -U postgres shop >/dev/null 2>&1
A="$(sum shop)"
LSN="$("$PGBIN/psql" -At -h 127.0.0.1 -p "$PORT" -U postgres -d shop -c "SELECT pg_current_wal_lsn()")"
echo "recorded LSN $LSN; now an accident: UPDATE without WHERE, DROP TABLE"
"$PGBIN/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres -d shop \
  -c "UPDATE notes SET body = 'oops'" -c "DROP TABLE pgbench_tellers" -c "SELECT pg_switch_wal()" >/dev/null
for _ in $(seq 1 60); do
  READY="$("$PGBIN/psql" -At -h 127.0.0.1 -p "$PORT" -U postgres -c "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")"
  [ "$READY" = 0 ] && break
  sleep 1
done
node bin/dbcrate.js windows --from "file://$DEMO/pitr"
as_pg node bin/dbcrate.js recover --from "file://$DEMO/pitr" --key "$DEMO/keys/demo.key.asc" \
  --passphrase-env DBCRATE_DEMO_PASSPHRASE --target-dir "$CLUSTER/recovered" --to-lsn "$LSN" \
  --start --port "$((PORT + 1))" --no-archive --progress off
B="$(PORT=$((PORT + 1)) sum shop)"
if [ "$A" != "$B" ]; then echo "PITR MISMATCH:"; echo " at $LSN: $A"; echo " recovered: $B"; exit 1; fi
echo "point-in-time recovery check passed: every table as it was at $LSN, before the accident"
