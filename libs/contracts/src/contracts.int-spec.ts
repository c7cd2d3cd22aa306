import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const REPO = join(__dirname, '..', '..', '..');
const BIN = join(REPO, 'node_modules', '.bin');
const env = { ...process.env, PATH: `${BIN}:${process.env.PATH}` };

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

describe('proto/ (buf)', () => {
  let tmp: string;
  beforeAll(() => (tmp = mkdtempSync(join(tmpdir(), 'dbcrate-proto-'))));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it('the committed generated code is what the protos generate now', () => {
    const copy = join(tmp, 'gen');
    cpSync(join(REPO, 'proto'), join(copy, 'proto'), { recursive: true });
    cpSync(join(REPO, 'scripts'), join(copy, 'scripts'), { recursive: true });
    symlinkSync(join(REPO, 'node_modules'), join(copy, 'node_modules'));
    execFileSync('buf', ['generate'], { cwd: join(copy, 'proto'), env });
    for (const out of ['libs/contracts/src/gen', 'libs/core/src/gen']) {
      const fresh = join(copy, out);
      const committed = join(REPO, out);
      expect(files(fresh)).toEqual(files(committed));
      for (const f of files(fresh)) {
        expect(`${out}/${f}: ${readFileSync(join(fresh, f), 'utf8')}`).toBe(
          `${out}/${f}: ${readFileSync(join(committed, f), 'utf8')}`,
        );
      }
    }
  });

  it('buf lint passes, and buf breaking catches a field renumbered', () => {
    execFileSync('buf', ['lint'], { cwd: join(REPO, 'proto'), env });
    const changed = join(tmp, 'breaking');
    cpSync(join(REPO, 'proto'), changed, { recursive: true });
    const jobs = join(changed, 'dbcrate', 'v1', 'jobs.proto');
    const text = readFileSync(jobs, 'utf8');
    expect(text).toContain('string org_id = 2;');
    writeFileSync(jobs, text.replace('string org_id = 2;', 'string org_id = 99;'));
    const r = spawnSync('buf', ['breaking', changed, '--against', join(REPO, 'proto')], {
      env,
      encoding: 'utf8',
    });
    expect(r.status).not.toBe(0);
    expect(r.stdout + r.stderr).toMatch(/org_id|Field "2"|deleted/i);
  });
});
