import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const REPO = join(__dirname, '..', '..');

/**
 * deploy/install.sh puts `dbcrate` and `dbcrate-wal-push` where PostgreSQL's user runs them
 * (archive_command as written in the README failed with "Permission denied" when the
 * checkout was not readable by postgres).
 */
describe('deploy/install.sh', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'dbcrate-install-'));
    chmodSync(dir, 0o755);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('installs both commands for the postgres user, the native client falling back to the installed CLI', () => {
    expect(process.getuid?.()).toBe(0); // CI runs as root; the script checks as postgres
    const prefix = join(dir, 'opt');
    const bindir = join(dir, 'bin');
    const out = execFileSync('bash', [join(REPO, 'deploy', 'install.sh')], {
      env: { ...process.env, PREFIX: prefix, BINDIR: bindir },
      encoding: 'utf8',
    });
    expect(out).toContain('ok: the postgres user runs');
    const asPg = (cmd: string, ...args: string[]) =>
      spawnSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { cwd: '/', encoding: 'utf8' });
    const version = asPg(join(bindir, 'dbcrate'), '--version');
    expect(version.status).toBe(0);
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')).version);
    // --help makes the native client hand over to the CLI it was built against: the installed one
    const help = asPg(join(bindir, 'dbcrate-wal-push'), '--help');
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('wal-push');
    expect(readFileSync(join(bindir, 'dbcrate'), 'utf8')).toContain(join(prefix, 'bin', 'dbcrate.js'));
  }, 120_000);
});
