import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryColumn,
  PrimaryGeneratedColumn,
} from 'typeorm';
import { Database } from './database.entity';
import type { JobState } from './job.states';

/** A job: its id is the NATS message id (for a firing, derived from schedule and fire time). */
@Entity('jobs')
@Index(['orgId', 'createdAt'])
@Index(['state', 'deadlineAt'])
export class Job {
  @PrimaryColumn({ type: 'text' })
  id!: string;

  @Column({ name: 'org_id', type: 'uuid' })
  orgId!: string;

  @Column({ name: 'agent_id', type: 'uuid' })
  agentId!: string;

  @Column({ name: 'database_id', type: 'uuid', nullable: true })
  databaseId!: string | null;

  @Column({ type: 'text' })
  kind!: string;

  @Column({ type: 'text' })
  state!: JobState;

  @Column({ type: 'int', default: 0 })
  attempts!: number;

  @Column({ name: 'schedule_id', type: 'uuid', nullable: true })
  scheduleId!: string | null;

  @Column({ name: 'scheduled_for', type: 'timestamptz', nullable: true })
  scheduledFor!: Date | null;

  @Column({ name: 'requested_by', type: 'text' })
  requestedBy!: string;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;

  @Column({ name: 'dispatched_at', type: 'timestamptz', nullable: true })
  dispatchedAt!: Date | null;

  @Column({ name: 'started_at', type: 'timestamptz', nullable: true })
  startedAt!: Date | null;

  @Column({ name: 'finished_at', type: 'timestamptz', nullable: true })
  finishedAt!: Date | null;

  /** Past it with no result, the job is marked failed (never "running" forever). */
  @Column({ name: 'deadline_at', type: 'timestamptz', nullable: true })
  deadlineAt!: Date | null;

  @Column({ name: 'failure_code', type: 'text', nullable: true })
  failureCode!: string | null;

  @Column({ name: 'failure_message', type: 'text', nullable: true })
  failureMessage!: string | null;

  /** The agent's last report (progress or result), as JSON. */
  @Column({ type: 'jsonb', nullable: true })
  report!: Record<string, unknown> | null;
}

@Entity('snapshots')
@Index(['databaseId', 'snapshotId'], { unique: true })
@Index(['orgId', 'finishedAt'])
export class Snapshot {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ name: 'org_id', type: 'uuid' })
  orgId!: string;

  @Column({ name: 'database_id', type: 'uuid' })
  databaseId!: string;

  @ManyToOne(() => Database, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'database_id' })
  database?: Database;

  /** One snapshot per job: a redelivered result never records a second. */
  @Column({ name: 'job_id', type: 'text', unique: true })
  jobId!: string;

  @Column({ type: 'text' })
  kind!: 'dump' | 'base';

  @Column({ name: 'snapshot_id', type: 'text' })
  snapshotId!: string;

  @Column({ name: 'manifest_key', type: 'text' })
  manifestKey!: string;

  @Column({ name: 'stored_bytes', type: 'bigint' })
  storedBytes!: string;

  @Column({ name: 'source_bytes', type: 'bigint', nullable: true })
  sourceBytes!: string | null;

  @Column({ type: 'text' })
  sha256!: string;

  @Column({ name: 'start_lsn', type: 'text', nullable: true })
  startLsn!: string | null;

  @Column({ name: 'stop_lsn', type: 'text', nullable: true })
  stopLsn!: string | null;

  @Column({ type: 'int', nullable: true })
  timeline!: number | null;

  @Column({ type: 'text' })
  signer!: string;

  @Column({ type: 'text', default: 'complete' })
  status!: 'complete' | 'deleted';

  @Column({ name: 'started_at', type: 'timestamptz' })
  startedAt!: Date;

  @Column({ name: 'finished_at', type: 'timestamptz' })
  finishedAt!: Date;
}
