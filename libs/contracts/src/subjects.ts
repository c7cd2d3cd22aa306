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

export type ReportKind = 'progress' | 'result' | 'heartbeat';

export const Subjects = {
  /** Jobs for one agent (stream JOBS); the agent may consume only its own. */
  job: (agentId: string) => `${SUBJECT_PREFIX}.jobs.${subjectToken(agentId, 'agent id')}`,
  allJobs: `${SUBJECT_PREFIX}.jobs.*`,
  /** What an agent reports (stream REPORTS); the agent may publish only under its own id. */
  report: (agentId: string, kind: ReportKind) =>
    `${SUBJECT_PREFIX}.reports.${subjectToken(agentId, 'agent id')}.${kind}`,
  allReports: `${SUBJECT_PREFIX}.reports.*.*`,
  /** Credential requests of one agent (request/reply, not stored). */
  credentials: (agentId: string) => `${SUBJECT_PREFIX}.credentials.${subjectToken(agentId, 'agent id')}`,
  allCredentials: `${SUBJECT_PREFIX}.credentials.*`,
  /** Events of one organisation (stream EVENTS); `type` is dotted, e.g. backup.ok. */
  event: (orgId: string, type: string) => {
    if (!/^[a-z]+(\.[a-z_]+)+$/.test(type)) throw new Error(`event type "${type}" is not like backup.ok`);
    return `${SUBJECT_PREFIX}.events.${subjectToken(orgId, 'organisation id')}.${type}`;
  },
  orgEvents: (orgId: string) => `${SUBJECT_PREFIX}.events.${subjectToken(orgId, 'organisation id')}.>`,
  allEvents: `${SUBJECT_PREFIX}.events.>`,
  /** Messages that could not be handled, by the stream they came from (stream DEAD_LETTERS). */
  deadLetter: (stream: string) => `${SUBJECT_PREFIX}.dead.${subjectToken(stream, 'stream')}`,
  allDeadLetters: `${SUBJECT_PREFIX}.dead.*`,
} as const;

export const Streams = {
  JOBS: 'DBCRATE_JOBS',
  REPORTS: 'DBCRATE_REPORTS',
  EVENTS: 'DBCRATE_EVENTS',
  DEAD_LETTERS: 'DBCRATE_DEAD_LETTERS',
} as const;

/** The NATS header naming a message's schema (its full protobuf name), e.g. dbcrate.v1.Job. */
export const SCHEMA_HEADER = 'Dbcrate-Schema';
