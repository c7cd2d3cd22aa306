// Builds the native archive_command client (native/dbcrate-wal-push.c) into
// dist/native/dbcrate-wal-push with this Node.js and this checkout's CLI baked in.
// Optional: without a C compiler, `dbcrate wal-push` does the same job, only slower to start.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'native', 'dbcrate-wal-push');
const cc = process.env.CC || 'cc';
const str = (s) => JSON.stringify(s);
mkdirSync(dirname(out), { recursive: true });
try {
  execFileSync(
    cc,
    [
      '-O2',
      '-Wall',
      '-Wextra',
      '-Werror',
      `-DNODE_BIN=${str(process.execPath)}`,
      `-DDBCRATE_JS=${str(join(root, 'bin', 'dbcrate.js'))}`,
      '-o',
      out,
      join(root, 'native', 'dbcrate-wal-push.c'),
    ],
    { stdio: 'inherit' },
  );
  console.log(`built ${out}`);
} catch (e) {
  console.warn(
    `dbcrate: native wal-push client not built (${e.message}); archive_command can use \`dbcrate wal-push\``,
  );
}
