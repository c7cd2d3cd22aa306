import { Writable } from 'node:stream';
import { createLogger, logger } from './logger';
import { MASK, redact, registerSecret, runInScope } from './redact';
import { DbcrateError, ErrorCodes } from './errors';
import { currentScope } from './scope';

function sink(): { stream: Writable; text: () => string } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(c: Buffer, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  return { stream, text: () => Buffer.concat(chunks).toString() };
}

/** A gate the test opens, so two scopes are provably alive at the same time. */
function barrier(): { wait: Promise<void>; open: () => void } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { wait, open };
}

describe('work scopes', () => {
  it('keep each job’s secrets and logger to that job, even while two run at once', async () => {
    const a = sink();
    const b = sink();
    const bothRegistered = barrier();
    const aRegistered = barrier();
    const jobA = runInScope({ logger: createLogger({ destination: a.stream, level: 'info' }) }, async () => {
      registerSecret('alpha-secret-1');
      aRegistered.open();
      await bothRegistered.wait;
      logger().info('job a saw alpha-secret-1 and beta-secret-2');
      return redact('alpha-secret-1 beta-secret-2');
    });
    const jobB = runInScope({ logger: createLogger({ destination: b.stream, level: 'info' }) }, async () => {
      await aRegistered.wait;
      registerSecret('beta-secret-2');
      bothRegistered.open();
      logger().info('job b saw beta-secret-2');
      return redact('alpha-secret-1 beta-secret-2');
    });
    // Each scope masks what it registered, and nothing of the other's.
    expect(await jobA).toBe(`${MASK} beta-secret-2`);
    expect(await jobB).toBe(`alpha-secret-1 ${MASK}`);
    expect(a.text()).toContain(`job a saw ${MASK} and beta-secret-2`);
    expect(a.text()).not.toContain('alpha-secret-1');
    expect(b.text()).toContain(`job b saw ${MASK}`);
    expect(b.text()).not.toContain('job a');
    // The process registry did not grow: the jobs' secrets went with them.
    expect(currentScope().secrets.has('alpha-secret-1')).toBe(false);
    expect(currentScope().secrets.has('beta-secret-2')).toBe(false);
  });

  it('mask the secrets of the scopes a nested scope was opened in', async () => {
    await runInScope({}, async () => {
      registerSecret('outer-secret-9');
      await runInScope({ nested: true }, async () => {
        registerSecret('inner-secret-8');
        expect(redact('outer-secret-9 inner-secret-8')).toBe(`${MASK} ${MASK}`);
      });
      expect(redact('outer-secret-9 inner-secret-8')).toBe(`${MASK} inner-secret-8`);
    });
  });

  it('let an error leave a scope with its secrets already masked', async () => {
    const err = await runInScope({}, async () => {
      registerSecret('pw-in-error-7');
      throw new DbcrateError(ErrorCodes.DB_UNREACHABLE, 'login failed with pw-in-error-7', {
        hint: 'check pw-in-error-7',
        cause: new Error('server said pw-in-error-7'),
      });
    }).catch((e: unknown) => e as DbcrateError);
    expect(err).toBeInstanceOf(DbcrateError);
    expect(err.code).toBe(ErrorCodes.DB_UNREACHABLE);
    for (const text of [err.message, err.stack, err.hint, (err.cause as Error).message]) {
      expect(text).toContain(MASK);
      expect(text).not.toContain('pw-in-error-7');
    }
  });

  it('replace an error whose text cannot be rewritten by one that keeps its code, not by a TypeError', async () => {
    const frozen = await runInScope({}, async () => {
      registerSecret('frozen-secret-5');
      throw Object.freeze(
        Object.assign(new Error('failed with frozen-secret-5'), { code: ErrorCodes.STORAGE_UNREACHABLE }),
      );
    }).catch((e: unknown) => e as DbcrateError);
    expect(frozen).toBeInstanceOf(DbcrateError);
    expect(frozen.code).toBe(ErrorCodes.STORAGE_UNREACHABLE);
    expect(frozen.message).toBe(`failed with ${MASK}`);
    // DOMException's message is a getter: a cancelled job still leaves as an abort.
    const aborted = await runInScope({}, async () => {
      registerSecret('dom-secret-4');
      throw new DOMException('aborted while holding dom-secret-4', 'AbortError');
    }).catch((e: unknown) => e as Error);
    expect(aborted.name).toBe('AbortError');
    expect(aborted.message).toBe(`aborted while holding ${MASK}`);
    const plain = await runInScope({}, async () => {
      registerSecret('aggregate-secret-3');
      throw new AggregateError([new Error('one aggregate-secret-3')], 'two failed');
    }).catch((e: unknown) => e as AggregateError);
    expect((plain.errors[0] as Error).message).toBe(`one ${MASK}`);
  });

  it('do not hand a job’s secrets or logger to a job started from its callbacks', async () => {
    const a = sink();
    const started = await runInScope({ logger: createLogger({ destination: a.stream }) }, async () => {
      registerSecret('first-job-secret-2');
      // A job started from a timer this job set (a queue would do the same).
      return new Promise<{ masked: string; sameLogger: boolean }>((done) => {
        const first = logger();
        setTimeout(() => {
          void runInScope({}, async () => ({
            masked: redact('first-job-secret-2'),
            sameLogger: logger() === first,
          })).then(done);
        }, 1);
      });
    });
    expect(started.masked).toBe('first-job-secret-2');
    expect(started.sameLogger).toBe(false);
    // Asked for, a scope nests under the current one.
    await runInScope({}, async () => {
      registerSecret('outer-secret-1x');
      await runInScope({ nested: true }, async () => expect(redact('outer-secret-1x')).toBe(MASK));
      await runInScope({}, async () => expect(redact('outer-secret-1x')).toBe('outer-secret-1x'));
    });
  });
});
