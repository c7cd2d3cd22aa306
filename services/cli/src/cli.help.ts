import type { Command } from 'commander';
import type { z } from 'zod';

/**
 * Settings can come from a flag, the environment or the config file, so commander must not
 * enforce them; but help must still say which ones a command needs. Marks the options
 * whose setting the command's schema requires (no default, not optional) "(required)".
 */
export function markRequired<C extends Command>(schema: z.ZodObject, cmd: C): C {
  for (const o of cmd.options) {
    const field = schema.shape[o.attributeName()] as z.ZodType | undefined;
    if (!field || field.safeParse(undefined).success) continue;
    if (!o.description.endsWith('(required)')) o.description = `${o.description} (required)`;
  }
  return cmd;
}
