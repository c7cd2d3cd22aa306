// pgBackRest, the peer of the PITR benchmarks: one pgbackrest.conf for the whole run (one
// local repository, one stanza per throwaway cluster), stanza setup, archive_command
// strings, and where its archive and backups land. Everything runs as the postgres OS
// user, like PostgreSQL's archive_command does.
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, readdirSync, rmSync, writeFileSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { mkdirPg, pgEnv, pgUser, runPg, treeBytes } from './wal.mjs';

export const PGBACKREST = process.env.BENCH_PGBACKREST ?? 'pgbackrest';

export class PgBackRest {
  /**
   * @param root  directory for the configuration, repository, spool, lock and log paths
   * @param opts.processMax  process-max (parallel compression/transfer, async archive-push/get)
   * @param opts.compressLevel  zstd level (3, like dbcrate)
   */
  constructor(root, { processMax = 2, compressLevel = 3 } = {}) {
    this.root = root;
    this.conf = join(root, 'pgbackrest.conf');
    this.repo = join(root, 'repo');
    this.spool = join(root, 'spool');
    this.processMax = processMax;
    this.compressLevel = compressLevel;
    this.cipherPass = randomBytes(36).toString('base64url');
    this.stanzas = new Map(); // name -> { path, port, socket }
    this.home = join(root, 'home');
    for (const d of [root, this.repo, this.spool, join(root, 'lock'), join(root, 'log'), this.home])
      mkdirPg(d, 0o750);
    this.write();
  }

  /** The [global] options: what every measured pgBackRest command uses unless its command line says otherwise. */
  globalOptions() {
    return [
      ['repo1-path', this.repo],
      ['repo1-cipher-type', 'aes-256-cbc'],
      ['repo1-cipher-pass', this.cipherPass],
      ['repo1-retention-full', '99'],
      ['compress-type', 'zst'],
      ['compress-level', String(this.compressLevel)],
      ['process-max', String(this.processMax)],
      ['archive-async', 'y'],
      ['spool-path', this.spool],
      ['start-fast', 'y'],
      ['lock-path', join(this.root, 'lock')],
      ['log-path', join(this.root, 'log')],
      ['log-level-console', 'warn'],
      ['log-level-stderr', 'warn'],
      ['log-level-file', 'off'],
    ];
  }

  text() {
    const lines = ['[global]', ...this.globalOptions().map(([k, v]) => `${k}=${v}`)];
    for (const [name, s] of this.stanzas) {
      lines.push('', `[${name}]`, `pg1-path=${s.path}`, `pg1-port=${s.port}`, `pg1-socket-path=${s.socket}`);
    }
    return lines.join('\n') + '\n';
  }

  write() {
    writeFileSync(this.conf, this.text(), { mode: 0o640 });
    if (process.getuid?.() === 0) chownSync(this.conf, pgUser().uid, pgUser().gid);
  }

  /** The configuration as printed in docs/benchmarks.md: temp paths abbreviated, the passphrase not shown. */
  printable(base) {
    return this.text()
      .replace(
        `repo1-cipher-pass=${this.cipherPass}`,
        'repo1-cipher-pass=<48 random characters, new every run>',
      )
      .replaceAll(base, '$TMP');
  }

  /** A stanza for `cluster` (an ArchiveCluster: data, port, root as the socket directory). */
  addStanza(name, cluster) {
    this.stanzas.set(name, { path: cluster.data, port: cluster.port, socket: cluster.root });
    this.write();
  }

  env() {
    return pgEnv(this.home);
  }

  argv(stanza, command, ...opts) {
    return [PGBACKREST, `--config=${this.conf}`, `--stanza=${stanza}`, ...opts, command];
  }

  /** archive_command for the stanza; `sync` adds --no-archive-async. */
  archiveCommand(stanza, { sync = false } = {}) {
    return `${PGBACKREST} --config=${this.conf} --stanza=${stanza}${sync ? ' --no-archive-async' : ''} archive-push %p`;
  }

  /** stanza-create (needs the cluster running). */
  async stanzaCreate(stanza) {
    await runPg(this.argv(stanza, 'stanza-create'), { env: this.env() });
  }

  async version() {
    const { stdout } = await runPg([PGBACKREST, 'version'], { env: this.env() });
    return stdout.trim().replace(/^pgBackRest /, '');
  }

  archiveDir(stanza) {
    return join(this.repo, 'archive', stanza);
  }

  /** The archive id directory (e.g. 15-1) of the stanza, once stanza-create has run. */
  archiveIdDir(stanza) {
    const d = this.archiveDir(stanza);
    const id = existsSync(d) ? readdirSync(d).find((e) => /^\d+-\d+$/.test(e)) : undefined;
    return id ? join(d, id) : null;
  }

  /** The stored object of a WAL file (`<walfile>-<sha1>.zst`), or null while it is not there. */
  findWal(stanza, walfile) {
    const idDir = (this.cache ??= new Map()).get(stanza) ?? this.archiveIdDir(stanza);
    if (!idDir) return null;
    this.cache.set(stanza, idDir);
    try {
      return (
        readdirSync(join(idDir, walfile.slice(0, 16))).find(
          (f) => f.startsWith(`${walfile}-`) && f.endsWith('.zst'),
        ) ?? null
      );
    } catch {
      return null;
    }
  }

  /** Bytes and count of the archived WAL files of a stanza. */
  archivedBytes(stanza, names) {
    const set = names ? new Set(names) : null;
    return treeBytes(
      this.archiveDir(stanza),
      (f) => /^[0-9A-F]{24}-[0-9a-f]{40}/.test(f) && (!set || set.has(f.slice(0, 24))),
    );
  }

  /** Keep a copy of the freshly created (empty) archive of a stanza, to start over from it. */
  snapshotArchive(stanza) {
    const snap = `${this.archiveDir(stanza)}.empty`;
    rmSync(snap, { recursive: true, force: true });
    cpSync(this.archiveDir(stanza), snap, { recursive: true, preserveTimestamps: true });
    fixOwner(snap);
  }

  /** Back to the empty archive (and an empty spool) of the stanza. */
  resetArchive(stanza) {
    rmSync(this.archiveDir(stanza), { recursive: true, force: true });
    cpSync(`${this.archiveDir(stanza)}.empty`, this.archiveDir(stanza), {
      recursive: true,
      preserveTimestamps: true,
    });
    fixOwner(this.archiveDir(stanza));
    rmSync(join(this.spool, 'archive', stanza), { recursive: true, force: true });
    this.cache?.delete(stanza);
  }

  /** The full backups of a stanza, oldest first (directory names like 20261125-141552F). */
  backups(stanza) {
    const d = join(this.repo, 'backup', stanza);
    return existsSync(d)
      ? readdirSync(d)
          .filter((e) => /^\d{8}-\d{6}F$/.test(e))
          .sort()
      : [];
  }

  backupBytes(stanza, label) {
    return treeBytes(join(this.repo, 'backup', stanza, label));
  }
}

/** cpSync as root leaves root-owned copies: give them back to postgres. */
function fixOwner(dir) {
  if (process.getuid?.() !== 0) return;
  const { uid, gid } = pgUser();
  const walk = (p) => {
    chownSync(p, uid, gid);
    for (const e of readdirSync(p, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(p, e.name));
      else chownSync(join(p, e.name), uid, gid);
    }
  };
  walk(dir);
}
