import { Column, CreateDateColumn, Entity, Index, PrimaryGeneratedColumn } from 'typeorm';
import { OrgOwned } from './organisation.entity';

export type AgentState = 'enrolled' | 'online' | 'offline' | 'revoked';

@Entity('agents')
@Index(['orgId'])
export class Agent extends OrgOwned {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ type: 'text' })
  name!: string;

  @Column({ type: 'text' })
  host!: string;

  @Column({ type: 'text', default: '' })
  version!: string;

  /** sha256 of the agent's certificate public key (its enrolled identity). */
  @Column({ name: 'identity_fingerprint', type: 'text', unique: true })
  identityFingerprint!: string;

  /** The OpenPGP fingerprint of its backup signing key (a trusted signer of the organisation). */
  @Column({ name: 'signer_fingerprint', type: 'text', nullable: true })
  signerFingerprint!: string | null;

  /** PostgreSQL majors whose client tools it has. */
  @Column({ name: 'pg_majors', type: 'int', array: true, default: () => "'{}'" })
  pgMajors!: number[];

  /** Holds the organisation's private key (installed by the customer): may restore and verify. */
  @Column({ name: 'recovery_agent', type: 'boolean', default: false })
  recoveryAgent!: boolean;

  @Column({ type: 'text', default: 'enrolled' })
  state!: AgentState;

  @Column({ name: 'last_heartbeat_at', type: 'timestamptz', nullable: true })
  lastHeartbeatAt!: Date | null;

  @CreateDateColumn({ name: 'enrolled_at', type: 'timestamptz' })
  enrolledAt!: Date;

  @Column({ name: 'revoked_at', type: 'timestamptz', nullable: true })
  revokedAt!: Date | null;
}

/** Single-use, expiring; only its sha256 is kept. */
@Entity('enrollment_tokens')
export class EnrollmentToken extends OrgOwned {
  @PrimaryGeneratedColumn('uuid')
  id!: string;

  @Column({ name: 'token_sha256', type: 'text', unique: true })
  tokenSha256!: string;

  @Column({ name: 'expires_at', type: 'timestamptz' })
  expiresAt!: Date;

  @Column({ name: 'used_at', type: 'timestamptz', nullable: true })
  usedAt!: Date | null;

  @Column({ name: 'agent_id', type: 'uuid', nullable: true })
  agentId!: string | null;

  @Column({ name: 'created_by', type: 'text' })
  createdBy!: string;

  @CreateDateColumn({ name: 'created_at', type: 'timestamptz' })
  createdAt!: Date;
}
