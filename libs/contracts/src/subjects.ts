/**
 * Every NATS subject and stream of dbcrate, in one place. Handlers use these, never string
 * literals. The version in the prefix is the contract's (proto/dbcrate/v1): a message of
 * another version arrives on other subjects, or is refused by its schema header.
 */
export const SUBJECT_PREFIX = 'dbcrate.v1';

/** An id that becomes one subject token: no dots, wildcards or spaces. */
const TOKEN = /^[A-Za-z0-9_-]{1,128}$/;

export function subjectToken(value: string, what: string): string {
  if (!TOKEN.test(value)) {
    throw new Error(`${what} "${value}" cannot be part of a NATS subject (1-128 of A-Z a-z 0-9 _ -)`);
  }
  return value;
}

export const REPORT_KINDS = ['progress', 'result', 'heartbeat'] as const;
export type ReportKind = (typeof REPORT_KINDS)[number];

/**
 * The subjects and streams of one installation. `namespace` (tests, or two installations on
 * one NATS account) prefixes every subject and stream name; the default installation has none.
 */
export function topology(namespace = '') {
  // Lower case only: stream names are upper-cased, and "ab" and "AB" must not share streams.
  if (namespace && !/^[a-z0-9_-]{1,32}$/.test(namespace)) {
    throw new Error(`namespace "${namespace}" must be 1-32 of a-z 0-9 _ -`);
  }
  const p = namespace ? `${namespace}.${SUBJECT_PREFIX}` : SUBJECT_PREFIX;
  const n = namespace ? `${namespace.toUpperCase()}_` : '';
  const agent = (id: string) => subjectToken(id, 'agent id');
  const org = (id: string) => subjectToken(id, 'organisation id');
  return {
    prefix: p,
    subjects: {
      /** Jobs for one agent (stream JOBS); the agent may consume only its own. */
      job: (agentId: string) => `${p}.jobs.${agent(agentId)}`,
      allJobs: `${p}.jobs.*`,
      /** What an agent reports (stream REPORTS); the agent may publish only under its own id. */
      report: (agentId: string, kind: ReportKind) => {
        if (!REPORT_KINDS.includes(kind))
          throw new Error(`report kind "${String(kind)}" is not one of ${REPORT_KINDS.join(', ')}`);
        return `${p}.reports.${agent(agentId)}.${kind}`;
      },
      allReports: `${p}.reports.*.*`,
      /** Credential requests of one agent (request/reply, not stored). */
      credentials: (agentId: string) => `${p}.credentials.${agent(agentId)}`,
      allCredentials: `${p}.credentials.*`,
      /** Events of one organisation (stream EVENTS); `type` is dotted, e.g. backup.ok. */
      event: (orgId: string, type: string) => {
        if (!/^[a-z]+(\.[a-z_]+)+$/.test(type)) throw new Error(`event type "${type}" is not like backup.ok`);
        return `${p}.events.${org(orgId)}.${type}`;
      },
      orgEvents: (orgId: string) => `${p}.events.${org(orgId)}.>`,
      allEvents: `${p}.events.>`,
      /** Messages that could not be handled, by the stream they came from (stream DEAD_LETTERS). */
      deadLetter: (stream: string) => `${p}.dead.${subjectToken(stream, 'stream')}`,
      allDeadLetters: `${p}.dead.*`,
    },
    streams: {
      JOBS: `${n}DBCRATE_JOBS`,
      REPORTS: `${n}DBCRATE_REPORTS`,
      EVENTS: `${n}DBCRATE_EVENTS`,
      DEAD_LETTERS: `${n}DBCRATE_DEAD_LETTERS`,
    },
  } as const;
}
export type Topology = ReturnType<typeof topology>;

/** The default installation's subjects and streams. */
export const Subjects = topology().subjects;
export const Streams = topology().streams;

/** The NATS header naming a message's schema (its full protobuf name), e.g. dbcrate.v1.Job. */
export const SCHEMA_HEADER = 'Dbcrate-Schema';
