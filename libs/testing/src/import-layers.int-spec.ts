import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const REPO = join(__dirname, '..', '..', '..');
const ESLINT = join(REPO, 'node_modules', '.bin', 'eslint');

/** Lint `code` as if it were the file `path` of the repository, with the repository's config. */
function lint(path: string, code: string): { errors: string[] } {
  const r = spawnSync(ESLINT, ['--format', 'json', '--stdin', '--stdin-filename', path], {
    cwd: REPO,
    input: code,
    encoding: 'utf8',
  });
  const [result] = JSON.parse(r.stdout) as { messages: { ruleId: string | null; message: string }[] }[];
  return { errors: result.messages.map((m) => `${m.ruleId}: ${m.message}`) };
}

describe('the direction of imports between libraries is enforced by lint', () => {
  it('refuses a lower library importing a higher one, naming what it may import', () => {
    const { errors } = lint(
      'libs/core/src/probe.ts',
      "import { recoverCluster } from '@dbcrate/pitr';\nexport const x = recoverCluster;\n",
    );
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^no-restricted-imports: .*libs\/core may import only no other library/);
  });

  it('refuses siblings importing each other (pitr and dump) and a library importing a service', () => {
    expect(
      lint(
        'libs/pitr/src/probe.ts',
        "import { runBackup } from '@dbcrate/dump';\nexport const x = runBackup;\n",
      ).errors[0],
    ).toMatch(/libs\/pitr may import only/);
    expect(
      lint(
        'libs/dump/src/probe.ts',
        "import { buildProgram } from '../../../services/cli/src/main';\nexport const x = buildProgram;\n",
      ).errors[0],
    ).toMatch(/a library never imports a service/);
  });

  it('refuses test harnesses outside tests, and allows them in a spec', () => {
    const code = "import { startS3rver } from '@dbcrate/testing';\nexport const x = startS3rver;\n";
    expect(lint('libs/storage/src/probe.ts', code).errors[0]).toMatch(/libs\/storage may import only/);
    expect(lint('services/cli/src/probe.ts', code).errors[0]).toMatch(/test harnesses are for tests only/);
    expect(lint('libs/storage/src/probe.spec.ts', code).errors).toEqual([]);
  });

  it('allows what the layers allow', () => {
    const code = "import { sealStage } from '@dbcrate/plumbing';\nexport const x = sealStage;\n";
    expect(lint('libs/pitr/src/probe.ts', code).errors).toEqual([]);
  });
});
