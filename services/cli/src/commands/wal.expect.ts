import { readFile, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { z } from 'zod';
import { loadConfigFile, resolveSettings } from '@dbcrate/config';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { signingKeyFingerprint, type RecipientKey } from '@dbcrate/crypto';
import { AgentError, type PushExpect } from '@dbcrate/pitr';
import { displayUrl } from '@dbcrate/storage';
import { FileKeyProvider } from '@dbcrate/crypto';

const expectSchema = z.object({
  to: z.string().optional(),
  recipient: z.array(z.string()).optional(),
  databaseId: z.string().optional(),
  signingKey: z.string().optional(),
});

export interface AgentSettings {
  displayUrl: string;
  databaseId: string;
  systemIdentifier: string;
  recipients: RecipientKey[];
  /** Fingerprint of the key the agent signs with. */
  signer?: string;
}

const sameUrl = (a: string, b: string): boolean => a.replace(/\/+$/, '') === b.replace(/\/+$/, '');

async function stamp(paths: (string | undefined)[]): Promise<string> {
  const parts: string[] = [];
  for (const p of paths)
    if (p)
      parts.push(
        String(
          await stat(p).then(
            (s) => s.mtimeMs,
            () => -1,
          ),
        ),
      );
  return parts.join(',');
}

/**
 * The agent's check of a push's settings: resolve what the wal-push call was given (flags,
 * its environment, its config file) as wal-push itself would, and compare destination,
 * database id and recipient fingerprints with the agent's own. A verdict is cached until
 * the config or a key file changes (mtime), so a push costs a few stat calls.
 */
export function settingsVerifier(agent: AgentSettings): (expect: PushExpect) => Promise<void> {
  const mine = new Set(agent.recipients.map((r) => r.fingerprint));
  const ok = new Map<string, { files: string[]; stamp: string }>();
  return async (expect) => {
    const cacheKey = JSON.stringify(expect);
    const hit = ok.get(cacheKey);
    if (hit && (await stamp(hit.files)) === hit.stamp) return;
    const file = loadConfigFile(expect.config);
    const s = resolveSettings(expectSchema, {
      flags: {
        to: expect.to,
        recipient: expect.recipient,
        databaseId: expect.databaseId,
        signingKey: expect.signingKey,
      },
      env: expect.env ?? {},
      file,
    });
    const problems: string[] = [];
    if (s.to && !sameUrl(displayUrl(s.to), agent.displayUrl))
      problems.push(`destination ${displayUrl(s.to)} (the agent archives to ${agent.displayUrl})`);
    const databaseId = s.databaseId ?? agent.systemIdentifier;
    if (databaseId !== agent.databaseId)
      problems.push(`database id "${databaseId}" (the agent's is "${agent.databaseId}")`);
    const files = (s.recipient ?? []).map((p) => resolve(expect.cwd ?? '/', p));
    if (files.length) {
      const theirs = new Set(
        (await new FileKeyProvider({ recipients: files }).recipients()).map((r) => r.fingerprint),
      );
      const same = theirs.size === mine.size && [...theirs].every((f) => mine.has(f));
      if (!same)
        problems.push(`recipients ${[...theirs].join(', ')} (the agent encrypts to ${[...mine].join(', ')})`);
    }
    if (s.signingKey && agent.signer) {
      const file = resolve(expect.cwd ?? '/', s.signingKey);
      const theirs = await signingKeyFingerprint(await readFile(file, 'utf8')).catch(
        () => `an unreadable key (${file})`,
      );
      if (theirs !== agent.signer)
        problems.push(`signing key ${theirs} (the agent signs with ${agent.signer})`);
      files.push(file);
    }
    if (problems.length) {
      throw new DbcrateError(
        ErrorCodes.CONFIG,
        `the running agent serves other settings than this wal-push was given: ${problems.join('; ')}; nothing was archived`,
        {
          hint: 'start the agent with the same --config as archive_command (or stop it: wal-push then pushes by itself)',
        },
      );
    }
    const watched = [expect.config, ...files].filter((p): p is string => !!p);
    ok.set(cacheKey, { files: watched, stamp: await stamp(watched) });
  };
}

/** The protocol's AgentError (a plain Error: the protocol loads no dbcrate library) as a DbcrateError. */
export function agentFailure(e: unknown): unknown {
  if (e instanceof AgentError) return new DbcrateError(ErrorCodes.AGENT, e.message, { hint: e.hint });
  return e;
}
