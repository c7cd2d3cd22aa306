#!/usr/bin/env bash
# The main job, end to end on this machine: a throwaway PostgreSQL with a sample
# database, a fresh organisation key pair, an encrypted backup into a local folder,
# then a restore into a new database and a check that every table matches.
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
cleanup() { as_pg "$PGBIN/pg_ctl" -D "$CLUSTER/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$CLUSTER"; }
trap cleanup EXIT

echo "==> starting a throwaway PostgreSQL ($("$PGBIN/postgres" --version)) on port $PORT"
as_pg "$PGBIN/initdb" -D "$CLUSTER/data" -U postgres --auth=trust >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$CLUSTER/data" -l "$CLUSTER/log" -w \
  -o "-p $PORT -k $CLUSTER -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
DB="postgres://postgres@127.0.0.1:$PORT"

echo "==> creating sample database 'shop' (pgbench, scale 5, plus a text table)"
"$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres shop
"$PGBIN/pgbench" -q -i -s 5 -h 127.0.0.1 -p "$PORT" -U postgres shop >/dev/null 2>&1
"$PGBIN/psql" -q -h 127.0.0.1 -p "$PORT" -U postgres -d shop -c \
  "CREATE TABLE notes AS SELECT g AS id, md5(g::text) || repeat(chr(65 + g % 26), g % 50) AS body, now() AS at FROM generate_series(1, 100000) g"

if [ ! -f "$DEMO/keys/demo.pub.asc" ]; then
  echo "==> generating the organisation key pair in $DEMO/keys"
  export DBCRATE_DEMO_PASSPHRASE="${DBCRATE_DEMO_PASSPHRASE:-demo-passphrase-change-me}"
  node bin/dbcrate.js keys generate --name demo --out "$DEMO/keys" --passphrase-env DBCRATE_DEMO_PASSPHRASE
fi
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
