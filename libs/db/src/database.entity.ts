import {
  Column,
  CreateDateColumn,
  Entity,
  Index,
  JoinColumn,
  ManyToOne,
  PrimaryGeneratedColumn,
} from 'typeorm';
import { Agent } from './agent.entity';
import { OrgOwned } from './organisation.entity';

/** Where backups go. Credentials are sealed (libs/crypto sealSecret), never stored or returned in clear. */
@Entity('destinations')
@Index(['orgId', 'name'], { unique: true })
export class Destination extends OrgOwned {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ type: 'text' })
  name!: string;

  @Column({ type: 'text' })
  type!: 's3' | 'sftp' | 'file';

  /** The destination URL without any secret (bucket, endpoint, prefix, host, path). */
  @Column({ type: 'text' })
  url!: string;

  @Column({ name: 'sealed_credentials', type: 'bytea', nullable: true, select: false })
  sealedCredentials!: Buffer | null;

  @Column({ name: 'probed_at', type: 'timestamptz', nullable: true })
  probedAt!: Date | null;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}

@Entity('databases')
@Index(['orgId', 'name'], { unique: true })
export class Database extends OrgOwned {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ name: 'agent_id', type: 'uuid' })
  agentId!: string;

  @ManyToOne(() => Agent, { onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'agent_id' })
  agent?: Agent;

  @Column({ name: 'destination_id', type: 'uuid' })
  destinationId!: string;

  @ManyToOne(() => Destination, { onDelete: 'RESTRICT' })
  @JoinColumn({ name: 'destination_id' })
  destination?: Destination;

  @Column({ type: 'text' })
  name!: string;

  /** The database id in the destination's layout (<database-id>/dumps/…, <database-id>/base/…). */
  @Column({ name: 'database_key', type: 'text' })
  databaseKey!: string;

  @Column({ type: 'text' })
  kind!: 'dump' | 'pitr';

  /** libpq connection string without a password; the password, if any, is sealed. */
  @Column({ type: 'text' })
  conninfo!: string;

  @Column({ name: 'sealed_password', type: 'bytea', nullable: true, select: false })
  sealedPassword!: Buffer | null;

  @Column({ type: 'text', nullable: true })
  pgdata!: string | null;

  @Column({ name: 'major_version', type: 'int', nullable: true })
  majorVersion!: number | null;

  /** A production database: restoring into it needs its name typed. */
  @Column({ type: 'boolean', default: false })
  production!: boolean;

  @Column({ type: 'jsonb', default: () => "'{}'" })
  labels!: Record<string, string>;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}

@Entity('schedules')
@Index(['orgId'])
export class Schedule {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ name: 'org_id', type: 'uuid' })
  orgId!: string;

  @Column({ name: 'database_id', type: 'uuid' })
  databaseId!: string;

  @ManyToOne(() => Database, { onDelete: 'CASCADE' })
  @JoinColumn({ name: 'database_id' })
  database?: Database;

  @Column({ type: 'text' })
  cron!: string;

  @Column({ name: 'time_zone', type: 'text', default: 'UTC' })
  timeZone!: string;

  @Column({ type: 'text' })
  kind!: 'dump' | 'base';

  @Column({ type: 'boolean', default: true })
  enabled!: boolean;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}
