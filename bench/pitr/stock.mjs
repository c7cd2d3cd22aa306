// B1's context line: the stock-tools pipeline dbcrate basebackup replaces (pg_basebackup |
// zstd | gpg), its preparation, the check of its output, and the gpg-agents it leaves.
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pgTool } from '../lib/cluster.mjs';
import { freshDirPg, mkdirPg, runPg } from '../lib/wal.mjs';
import { execFileP } from './setup.mjs';

/** The B1 stock pipeline, run by bash as the postgres user; its inputs come from the environment. */
export const STOCK_PIPE = `set -o pipefail
"$PG_BASEBACKUP" -d "$CONNINFO" -D - -Ft -X none --checkpoint=fast |
  zstd -3 -T"$THREADS" |
  gpg --batch --trust-model always --encrypt --recipient-file "$PUB" > "$OUT"`;

/** zstd worker threads dbcrate basebackup uses by default (its own constant when built, else 2). */
function zstdDefaultThreads(app) {
  try {
    const req = createRequire(import.meta.url);
    const n = req(join(app, 'dist', 'libs', 'compression', 'src', 'zstd-napi.codec.js')).ZSTD_DEFAULT_THREADS;
    return Number.isInteger(n) && n > 0 ? n : 2;
  } catch {
    return 2;
  }
}

// ------------------------------------------------------------ B1 stock pipeline (context)
/** Stop the gpg-agent of every throwaway GNUPGHOME of this run (one only runs after a decryption). */
export async function gpgKillAgents(pitr) {
  const { envPg } = pitr;
  for (const h of pitr.gpgHomes.splice(0)) {
    await runPg(['gpgconf', '--homedir', h, '--kill', 'all'], { env: { ...envPg, GNUPGHOME: h } }).catch(
      () => undefined,
    );
  }
}
/** A new GNUPGHOME (mode 700, owned by postgres) in the stage directory. */
function gpgHome(pitr, d) {
  freshDirPg(d, 0o700);
  pitr.gpgHomes.push(d);
  return d;
}
/**
 * The stock pipeline's environment and printable command; null (with a note) if gpg or zstd
 * cannot run here. Creates the keybox before anything is timed.
 */
export async function stockPrepare(pitr, dir, c) {
  const { res, envPg, pub, short } = pitr;
  const threads = zstdDefaultThreads(pitr.app);
  const home = gpgHome(pitr, join(dir, 'gnupg'));
  const outDir = join(dir, 'stock');
  mkdirPg(outDir);
  const env = {
    GNUPGHOME: home,
    PG_BASEBACKUP: pgTool('pg_basebackup'),
    CONNINFO: c.conninfo('postgres'),
    THREADS: String(threads),
    PUB: pub,
  };
  try {
    await runPg(['gpg', '--batch', '--list-keys'], { env: { ...envPg, GNUPGHOME: home } });
    await runPg(['zstd', '--version'], { env: envPg });
  } catch (e) {
    res.notes.push(`B1: the stock pipeline was not measured: ${short(e.message)}`);
    return null;
  }
  res.versions.stock = await Promise.all([
    execFileP(pgTool('pg_basebackup'), ['--version']).then((r) =>
      r.stdout.trim().replace(/^pg_basebackup \(PostgreSQL\) /, ''),
    ),
    execFileP('zstd', ['--version']).then((r) => (/v(\d[\w.]*)/.exec(r.stdout) ?? [])[1] ?? r.stdout.trim()),
    execFileP('gpg', ['--version']).then((r) => r.stdout.split('\n')[0].replace(/^gpg \(GnuPG\) /, '')),
  ])
    .then(([a, b, g]) => `${a} / ${b} / ${g}`)
    .catch(() => 'n/a');
  return {
    env,
    threads,
    outDir,
    home,
    n: 0,
    last: null,
    text:
      `GNUPGHOME=${short(home)} (throwaway, empty) bash -c 'set -o pipefail; ` +
      `pg_basebackup -d "${c.conninfo('postgres')}" -D - -Ft -X none --checkpoint=fast | zstd -3 -T${threads} | ` +
      `gpg --batch --trust-model always --encrypt --recipient-file ${short(pub)} > ${short(outDir)}/base-N.tar.zst.gpg'`,
  };
}
/**
 * Not timed: the last stock backup decrypts with dbcrate's private key (imported into another
 * throwaway GNUPGHOME) and is a pg_basebackup tar with backup_label and backup_manifest.
 */
export async function stockCheck(pitr, stock, r) {
  const { res, envPg, priv, short } = pitr;
  const home = gpgHome(pitr, join(stock.outDir, 'gnupg-check'));
  const env = { ...envPg, GNUPGHOME: home };
  try {
    await runPg(['gpg', '--batch', '--quiet', '--import', priv], { env });
    const { stdout } = await runPg(
      [
        'bash',
        '-c',
        'set -o pipefail; gpg --batch --quiet --pinentry-mode loopback --passphrase "" --decrypt "$1" | zstd -d -q | tar -t',
        'b1-stock-check',
        stock.last,
      ],
      { env },
    );
    const names = stdout.split('\n');
    r.checked = ['backup_label', 'backup_manifest'].every((n) => names.includes(n));
    if (!r.checked)
      res.notes.push(
        `B1: the stock pipeline's output decrypted, but its tar lacks backup_label or backup_manifest (${names.length} entries).`,
      );
  } catch (e) {
    r.checked = false;
    res.notes.push(`B1: the stock pipeline's output did not decrypt and list: ${short(e.message)}`);
  } finally {
    await gpgKillAgents(pitr);
  }
}
