import { DbcrateError, ErrorCodes } from '@dbcrate/core';

/**
 * PostgreSQL's WAL naming and LSN arithmetic (src/include/access/xlog_internal.h).
 * LSNs are bigints: they are 64-bit and the high half matters after 4 GiB of WAL.
 */
export const DEFAULT_WAL_SEGMENT_SIZE = 16 * 1024 * 1024;

export type WalFileKind = 'segment' | 'partial' | 'backup' | 'history';

export interface WalFileName {
  name: string;
  kind: WalFileKind;
  timeline: number;
  /** Segment name part (24 hex) for segment/partial/backup; undefined for history files. */
  segmentName?: string;
}

const SEGMENT = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;
const PARTIAL = /^([0-9A-F]{24})\.partial$/;
const BACKUP = /^([0-9A-F]{24})\.([0-9A-F]{8})\.backup$/;
const HISTORY = /^([0-9A-F]{8})\.history$/;

/** Recognise a WAL file name as PostgreSQL writes it; anything else → undefined. */
export function parseWalFileName(name: string): WalFileName | undefined {
  if (SEGMENT.test(name))
    return { name, kind: 'segment', timeline: parseInt(name.slice(0, 8), 16), segmentName: name };
  let m = PARTIAL.exec(name);
  if (m) return { name, kind: 'partial', timeline: parseInt(m[1].slice(0, 8), 16), segmentName: m[1] };
  m = BACKUP.exec(name);
  if (m) return { name, kind: 'backup', timeline: parseInt(m[1].slice(0, 8), 16), segmentName: m[1] };
  m = HISTORY.exec(name);
  if (m) return { name, kind: 'history', timeline: parseInt(m[1], 16) };
  return undefined;
}

export function requireWalFileName(name: string): WalFileName {
  const p = parseWalFileName(name);
  if (!p) {
    throw new DbcrateError(ErrorCodes.USAGE, `"${name}" is not a WAL file name`, {
      hint: 'expected e.g. 000000010000000000000003, 00000002.history, …03.00000028.backup or …05.partial',
    });
  }
  return p;
}

function segmentsPerId(segSize: number): bigint {
  return 0x100000000n / BigInt(segSize);
}

/** Segment number within its timeline (XLogSegNo). */
export function segmentNumber(segmentName: string, segSize = DEFAULT_WAL_SEGMENT_SIZE): bigint {
  const m = SEGMENT.exec(segmentName);
  if (!m) throw new DbcrateError(ErrorCodes.INTERNAL, `not a segment name: ${segmentName}`);
  return BigInt(`0x${m[2]}`) * segmentsPerId(segSize) + BigInt(`0x${m[3]}`);
}

export function walFileName(timeline: number, segNo: bigint, segSize = DEFAULT_WAL_SEGMENT_SIZE): string {
  const per = segmentsPerId(segSize);
  const hex = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0');
  return hex(timeline) + hex(segNo / per) + hex(segNo % per);
}

export function historyFileName(timeline: number): string {
  return `${timeline.toString(16).toUpperCase().padStart(8, '0')}.history`;
}

const LSN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export function isLsn(s: string): boolean {
  return LSN.test(s);
}

export function parseLsn(s: string): bigint {
  const m = LSN.exec(s.trim());
  if (!m) {
    throw new DbcrateError(ErrorCodes.USAGE, `"${s}" is not an LSN`, {
      hint: 'an LSN looks like 0/3000060 (as pg_current_wal_lsn() prints it)',
    });
  }
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function segmentOfLsn(lsn: bigint, segSize = DEFAULT_WAL_SEGMENT_SIZE): bigint {
  return lsn / BigInt(segSize);
}

/** First LSN of a segment. */
export function segmentStartLsn(segNo: bigint, segSize = DEFAULT_WAL_SEGMENT_SIZE): bigint {
  return segNo * BigInt(segSize);
}

/**
 * The long page header at the start of every WAL segment (XLogLongPageHeaderData):
 * magic u16, info u16, tli u32, pageaddr u64, rem_len u32, (pad), sysid u64, seg_size u32, blcksz u32.
 * Little-endian on every platform PostgreSQL ships for.
 */
export interface WalSegmentHeader {
  magic: number;
  timeline: number;
  pageAddress: bigint;
  systemIdentifier: string;
  segmentSize: number;
  blockSize: number;
}

const XLP_LONG_HEADER = 0x0002;

export function readSegmentHeader(buf: Buffer): WalSegmentHeader | undefined {
  if (buf.length < 40) return undefined;
  const info = buf.readUInt16LE(2);
  if (!(info & XLP_LONG_HEADER)) return undefined;
  return {
    magic: buf.readUInt16LE(0),
    timeline: buf.readUInt32LE(4),
    pageAddress: buf.readBigUInt64LE(8),
    systemIdentifier: buf.readBigUInt64LE(24).toString(),
    segmentSize: buf.readUInt32LE(32),
    blockSize: buf.readUInt32LE(36),
  };
}

/** system_identifier is the first field of ControlFileData (global/pg_control). */
export function systemIdentifierFromControlFile(buf: Buffer): string {
  if (buf.length < 8) throw new DbcrateError(ErrorCodes.INTERNAL, 'pg_control is too short');
  return buf.readBigUInt64LE(0).toString();
}

export interface TimelineHistoryEntry {
  /** A timeline that is an ancestor of the history file's own timeline. */
  timeline: number;
  /** Where the next timeline forked off from this one. */
  switchLsn: string;
}

/**
 * A timeline history file: one line per ancestor, "<parentTLI>\t<switchpoint>\t<reason>".
 * The reason (free text, may name a restore point) is not kept.
 */
export function parseTimelineHistory(text: string): TimelineHistoryEntry[] {
  const out: TimelineHistoryEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const [tli, lsn] = line.split(/\s+/);
    if (!/^\d+$/.test(tli) || !isLsn(lsn ?? '')) {
      throw new DbcrateError(ErrorCodes.INTEGRITY, `malformed timeline history line: "${line.slice(0, 80)}"`);
    }
    out.push({ timeline: Number(tli), switchLsn: formatLsn(parseLsn(lsn)) });
  }
  return out;
}
