#!/usr/bin/env node
'use strict';
// Thin launcher so `npx dbcrate` and `npm link` work after `npm run build`.
const path = require('node:path');
const fs = require('node:fs');
const dist = path.join(__dirname, '..', 'dist');
const entry = path.join(dist, 'services', 'cli', 'src', 'main.js');
if (!fs.existsSync(entry)) {
  process.stderr.write('dbcrate: not built yet. Run `npm run build` in ' + path.join(__dirname, '..') + '\n');
  process.exit(2);
}

// archive_command runs `dbcrate wal-push %p` once per WAL file. When an agent serves this
// data directory, hand the file over without loading the CLI (its libraries cost ~150 ms
// per call); otherwise, or on any doubt, fall through to the full command.
const WITH_VALUE = new Set([
  '--to',
  '--recipient',
  '--pgdata',
  '--database-id',
  '--socket',
  '--compression-level',
  '--zstd',
  '--config',
  '--log-level',
  '--progress',
  '--parallel',
]);

function fastWalPush(argv) {
  if (argv[0] !== 'wal-push' || argv.includes('--no-agent') || argv.includes('--help') || argv.includes('-h'))
    return undefined;
  let file;
  let socket = process.env.DBCRATE_SOCKET;
  let pgdata = process.env.DBCRATE_PGDATA;
  const flags = { recipient: [] };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    const eq = a.indexOf('=');
    const name = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    const value = a.startsWith('--') && eq > 0 ? a.slice(eq + 1) : argv[i + 1];
    if (WITH_VALUE.has(name)) {
      if (name === '--socket') socket = value;
      if (name === '--pgdata') pgdata = value;
      // the settings the agent must be serving (it refuses the push otherwise)
      if (name === '--to') flags.to = value;
      if (name === '--recipient') flags.recipient.push(value);
      if (name === '--database-id') flags.databaseId = value;
      if (name === '--config') flags.config = value;
      if (eq < 0) i++;
    } else if (a.startsWith('-')) {
      return undefined; // an option this parser does not know: let the CLI handle it
    } else if (file === undefined) {
      file = a;
    } else {
      return undefined;
    }
  }
  if (!file) return undefined;
  const protocol = require(path.join(dist, 'libs', 'pitr', 'src', 'agent.protocol.js'));
  const sock = socket || protocol.agentSocketPath(pgdata || process.cwd());
  return protocol.requestPush(sock, path.resolve(process.cwd(), file), {
    expect: protocol.pushExpect(flags),
  });
}

// restore_command under `recover --start` runs `dbcrate wal-fetch %f %p --from-socket DIR`
// for each WAL file the prefetch spool does not hold: ask the recover process over its socket
// without loading the CLI. Anything but a file or "not archived" goes to the full command.
function fastWalFetch(argv) {
  if (argv[0] !== 'wal-fetch' || argv.length < 4) return undefined;
  const [, walFile, dest, ...rest] = argv;
  let dir;
  if (rest.length === 2 && rest[0] === '--from-socket') dir = rest[1];
  else if (rest.length === 1 && rest[0].startsWith('--from-socket='))
    dir = rest[0].slice('--from-socket='.length);
  if (!dir || walFile.startsWith('-') || dest.startsWith('-')) return undefined;
  const src = path.join(dist, 'libs', 'pitr', 'src');
  const { requireWalFileName } = require(path.join(src, 'wal.names.js'));
  const { fetchFromWalServer } = require(path.join(src, 'wal.serve.client.js'));
  const { writeAtomically } = require(path.join(src, 'wal.write.js'));
  requireWalFileName(walFile);
  return fetchFromWalServer(dir, walFile).then(
    (data) => writeAtomically(path.resolve(process.cwd(), dest), data).then(() => process.exit(0)),
    (e) => {
      if (e && e.code !== 'E_WAL_NOT_FOUND') throw e;
      process.stderr.write(`dbcrate: ${e.message}\n`);
      process.exit(1);
    },
  );
}

let fetching;
try {
  fetching = fastWalFetch(process.argv.slice(2));
} catch {
  fetching = undefined;
}
const fast = fetching ? undefined : fastWalPush(process.argv.slice(2));
if (fetching) {
  fetching.catch(() => require(entry));
} else if (fast === undefined) {
  require(entry);
} else {
  fast.then(
    (reply) => {
      if (reply === undefined) return require(entry); // no agent: push from this process
      if (reply.ok) process.exit(0);
      process.stderr.write(`dbcrate: error: ${reply.message} [${reply.code}]\n`);
      if (reply.hint) process.stderr.write(`  hint: ${reply.hint}\n`);
      process.exit(reply.exitCode || 1);
    },
    (e) => {
      const hint = e.hint || 'PostgreSQL keeps the WAL file and retries';
      process.stderr.write(`dbcrate: error: ${e.message} [E_AGENT]\n  hint: ${hint}\n`);
      process.exit(4);
    },
  );
}
