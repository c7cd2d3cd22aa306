import { type Topology } from '@dbcrate/contracts';
import {
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  type JetStreamManager,
  type StreamConfig,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/nats-core';

const DAY_MS = 86_400_000;

export interface TopologyOptions {
  /** Replicas of each stream (a clustered NATS: 3). */
  replicas?: number;
  /** How long a job message's id is remembered against a second publish of the same firing. */
  duplicateWindowMs?: number;
}

/** The four streams of an installation (proto/README.md). */
export function streamConfigs(
  t: Topology,
  o: TopologyOptions = {},
): (Partial<StreamConfig> & { name: string })[] {
  const common = {
    storage: StorageType.File,
    num_replicas: o.replicas ?? 1,
    duplicate_window: nanos(o.duplicateWindowMs ?? 15 * 60_000),
    discard: DiscardPolicy.Old,
  };
  return [
    // One subject per agent; a job leaves the stream when it is acknowledged.
    {
      ...common,
      name: t.streams.JOBS,
      subjects: [t.subjects.allJobs],
      retention: RetentionPolicy.Workqueue,
      max_age: nanos(7 * DAY_MS),
    },
    // Kept while the control plane is down: results are not lost.
    {
      ...common,
      name: t.streams.REPORTS,
      subjects: [t.subjects.allReports],
      retention: RetentionPolicy.Limits,
      max_age: nanos(7 * DAY_MS),
    },
    {
      ...common,
      name: t.streams.EVENTS,
      subjects: [t.subjects.allEvents],
      retention: RetentionPolicy.Limits,
      max_age: nanos(90 * DAY_MS),
    },
    {
      ...common,
      name: t.streams.DEAD_LETTERS,
      subjects: [t.subjects.allDeadLetters],
      retention: RetentionPolicy.Limits,
      max_age: nanos(30 * DAY_MS),
    },
  ];
}

/** Create the streams, or bring existing ones to this configuration: safe to run at every start. */
export async function provisionStreams(
  jsm: JetStreamManager,
  t: Topology,
  o: TopologyOptions = {},
): Promise<void> {
  for (const cfg of streamConfigs(t, o)) {
    const name = cfg.name!;
    const existing = await jsm.streams.info(name).catch((e: unknown) => {
      if (isNotFound(e)) return undefined;
      throw e;
    });
    if (!existing) {
      await jsm.streams.add(cfg).catch(async (e: unknown) => {
        // Another replica created it between the look and the add.
        if (!(await jsm.streams.info(name).catch(() => undefined))) throw e;
      });
    } else {
      // Retention cannot change on an existing stream; everything else is brought up to date.
      const { retention: _r, ...rest } = cfg;
      await jsm.streams.update(name, rest);
    }
  }
}

export function isNotFound(e: unknown): boolean {
  const err = e as { code?: number; api_error?: { err_code?: number }; message?: string };
  return (
    err?.api_error?.err_code === 10059 ||
    err?.api_error?.err_code === 10014 ||
    /not found/i.test(err?.message ?? '')
  );
}
