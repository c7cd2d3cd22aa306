import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { MANIFEST_FORMAT, MANIFEST_VERSION, dumpManifestSchema } from '@dbcrate/dump';
import {
  BASE_MANIFEST_FORMAT,
  BASE_MANIFEST_VERSIONS,
  ClusterIdentitySchema,
  TimelineRecordSchema,
  baseManifestSchema,
} from '@dbcrate/pitr';

/**
 * What dbcrate writes into a destination is a contract as much as what it sends over NATS:
 * a backup written today must be readable by every later release. Each document is declared
 * once (a zod schema beside the code that writes it) and published as JSON Schema in
 * proto/storage/, so that a change to a stored format shows up as a diff there and comes
 * with a new formatVersion. UPDATE_STORAGE_SCHEMAS=1 rewrites the published files.
 */
const DIR = join(__dirname, '..', '..', '..', 'proto', 'storage');
const documents: { file: string; title: string; schema: z.ZodType; versions: readonly number[] }[] = [
  {
    file: 'dump-manifest.schema.json',
    title: `${MANIFEST_FORMAT}`,
    schema: dumpManifestSchema,
    versions: [MANIFEST_VERSION],
  },
  {
    file: 'base-manifest.schema.json',
    title: BASE_MANIFEST_FORMAT,
    schema: baseManifestSchema,
    versions: BASE_MANIFEST_VERSIONS,
  },
  { file: 'cluster.schema.json', title: 'dbcrate.cluster', schema: ClusterIdentitySchema, versions: [1, 2] },
  { file: 'timeline.schema.json', title: 'dbcrate.timeline', schema: TimelineRecordSchema, versions: [1] },
];

function published(d: (typeof documents)[number]): string {
  const json = z.toJSONSchema(d.schema, { target: 'draft-2020-12', io: 'input' });
  return JSON.stringify({ title: d.title, 'x-dbcrate-format-versions': d.versions, ...json }, null, 2) + '\n';
}

describe('on-storage documents', () => {
  it.each(documents)('$file is current with the schema that reads it', (d) => {
    const text = published(d);
    const path = join(DIR, d.file);
    if (process.env.UPDATE_STORAGE_SCHEMAS === '1') writeFileSync(path, text);
    expect(existsSync(path)).toBe(true);
    expect(readFileSync(path, 'utf8')).toBe(text);
  });

  it('every document names its format and version', () => {
    for (const d of documents) {
      const props = JSON.parse(published(d)) as {
        properties?: Record<string, unknown>;
        oneOf?: { properties: Record<string, unknown> }[];
        anyOf?: { properties: Record<string, unknown> }[];
      };
      const variants = props.properties
        ? [props.properties]
        : (props.oneOf ?? props.anyOf ?? []).map((v) => v.properties);
      expect(variants.length).toBeGreaterThan(0);
      for (const v of variants) {
        expect(v).toHaveProperty('format');
        expect(v).toHaveProperty('formatVersion');
      }
    }
  });
});
