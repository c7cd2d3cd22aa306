import { Transform, type TransformCallback } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';
import { formatLsn, isLsn, parseLsn } from './wal.names';

const BLOCK = 512;

export interface TarCaptureSpec {
  /** Keep at most this many bytes of the member. */
  maxBytes: number;
  /** Which end to keep when the member is larger (default head). */
  keep?: 'head' | 'tail';
}

/**
 * Passes a tar stream through unchanged while reading its headers, and keeps the content
 * of a few named members (e.g. backup_label, the end of backup_manifest). Understands
 * ustar (with prefix), GNU base-256 sizes and GNU long names; other extension headers are
 * skipped like any member. Never fails the stream: it only observes.
 */
export class TarScanner extends Transform {
  /** Captured content by member name ("./" stripped). */
  readonly captured = new Map<string, Buffer>();
  /** Number of members seen (headers, without extension headers). */
  members = 0;
  /** False when the stream was not a tar archive we could follow. */
  ok = true;

  private header = Buffer.alloc(BLOCK);
  private headerFill = 0;
  /** Bytes of member content still to come, then padding. */
  private remaining = 0;
  private padding = 0;
  private current?: { name: string; spec: TarCaptureSpec; chunks: Buffer[]; size: number };
  private longName?: { chunks: Buffer[] };
  private pendingLongName?: string;
  private ended = false;

  constructor(private readonly want: Readonly<Record<string, TarCaptureSpec>>) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.ok && !this.ended) this.scan(chunk);
    cb(null, chunk);
  }

  private scan(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length && !this.ended && this.ok) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - i);
        this.collect(chunk.subarray(i, i + n));
        this.remaining -= n;
        i += n;
        if (this.remaining === 0) this.finishMember();
      } else if (this.padding > 0) {
        const n = Math.min(this.padding, chunk.length - i);
        this.padding -= n;
        i += n;
      } else {
        const n = Math.min(BLOCK - this.headerFill, chunk.length - i);
        chunk.copy(this.header, this.headerFill, i, i + n);
        this.headerFill += n;
        i += n;
        if (this.headerFill === BLOCK) {
          this.headerFill = 0;
          this.readHeader();
        }
      }
    }
  }

  private collect(part: Buffer): void {
    if (this.longName) {
      this.longName.chunks.push(Buffer.from(part));
      return;
    }
    const c = this.current;
    if (!c) return;
    c.chunks.push(Buffer.from(part));
    c.size += part.length;
    // Bound memory: drop whole chunks from the end we do not keep.
    if (c.spec.keep === 'tail') {
      while (c.chunks.length > 1 && c.size - c.chunks[0].length >= c.spec.maxBytes) {
        c.size -= c.chunks.shift()!.length;
      }
    } else if (c.size >= c.spec.maxBytes) {
      const all = Buffer.concat(c.chunks).subarray(0, c.spec.maxBytes);
      c.chunks = [all];
      c.size = all.length;
    }
  }

  private finishMember(): void {
    this.padding = (BLOCK - (this.lastSize % BLOCK)) % BLOCK;
    if (this.longName) {
      this.pendingLongName = Buffer.concat(this.longName.chunks).toString('utf8').replace(/\0.*$/s, '');
      this.longName = undefined;
      return;
    }
    const c = this.current;
    this.current = undefined;
    if (!c) return;
    const all = Buffer.concat(c.chunks);
    this.captured.set(
      c.name,
      c.spec.keep === 'tail'
        ? all.subarray(Math.max(0, all.length - c.spec.maxBytes))
        : all.subarray(0, c.spec.maxBytes),
    );
  }

  private lastSize = 0;

  private readHeader(): void {
    const h = this.header;
    if (h.every((b) => b === 0)) {
      // End-of-archive marker (two zero blocks); anything after it is padding.
      this.ended = true;
      return;
    }
    if (!this.checksumOk(h)) {
      this.ok = false;
      return;
    }
    const size = this.readSize(h);
    if (size === undefined) {
      this.ok = false;
      return;
    }
    const type = String.fromCharCode(h[156] || 0x30);
    this.lastSize = size;
    this.remaining = size;
    if (type === 'L') {
      this.longName = { chunks: [] };
    } else if (type === 'x' || type === 'g' || type === 'K') {
      // pax / long link headers: not produced by PostgreSQL; skip their content.
    } else {
      this.members++;
      const name = (this.pendingLongName ?? this.fullName(h)).replace(/^(\.\/)+/, '');
      this.pendingLongName = undefined;
      const spec = (type === '0' || type === '\0') && this.want[name];
      if (spec) {
        this.current = { name, spec, chunks: [], size: 0 };
        if (size === 0) this.captured.set(name, Buffer.alloc(0));
      }
    }
    if (size === 0) {
      this.current = undefined;
      this.finishMember();
    }
  }

  private fullName(h: Buffer): string {
    const str = (from: number, len: number) => {
      const s = h.subarray(from, from + len);
      const end = s.indexOf(0);
      return s.subarray(0, end < 0 ? len : end).toString('utf8');
    };
    const name = str(0, 100);
    const ustar = h.subarray(257, 262).toString('latin1') === 'ustar';
    const prefix = ustar ? str(345, 155) : '';
    return prefix ? `${prefix}/${name}` : name;
  }

  private readSize(h: Buffer): number | undefined {
    const field = h.subarray(124, 136);
    if (field[0] & 0x80) {
      // GNU base-256: big-endian, the first byte's top bit is the marker.
      let v = BigInt(field[0] & 0x7f);
      for (let k = 1; k < field.length; k++) v = (v << 8n) | BigInt(field[k]);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : undefined;
    }
    const text = field
      .toString('latin1')
      .replace(/[\0 ]+$/g, '')
      .trim();
    if (text === '') return 0;
    return /^[0-7]+$/.test(text) ? parseInt(text, 8) : undefined;
  }

  private checksumOk(h: Buffer): boolean {
    const stored = h
      .subarray(148, 156)
      .toString('latin1')
      .replace(/[\0 ]+/g, '');
    if (!/^[0-7]+$/.test(stored)) return false;
    let sum = 0;
    for (let k = 0; k < BLOCK; k++) sum += k >= 148 && k < 156 ? 0x20 : h[k];
    return sum === parseInt(stored, 8);
  }
}

export interface BackupWalRange {
  startLsn: string;
  stopLsn: string;
  /** Timeline of the start point (backup_label's START TIMELINE). */
  timeline: number;
  /** Timeline of the stop point; differs only if the server was promoted during the backup. */
  stopTimeline: number;
}

/** backup_label's "START WAL LOCATION: 0/2000028 (file …)" and "START TIMELINE: 1". */
export function parseBackupLabel(text: string): { startLsn?: string; timeline?: number; label?: string } {
  const start = /^START WAL LOCATION: ([0-9A-Fa-f]+\/[0-9A-Fa-f]+)/m.exec(text)?.[1];
  const tli = /^START TIMELINE: (\d+)/m.exec(text)?.[1];
  const label = /^LABEL: (.*)$/m.exec(text)?.[1];
  return {
    startLsn: start && isLsn(start) ? formatLsn(parseLsn(start)) : undefined,
    timeline: tli ? Number(tli) : undefined,
    label,
  };
}

interface ManifestWalRange {
  Timeline: number;
  'Start-LSN': string;
  'End-LSN': string;
}

/**
 * The "WAL-Ranges" of a backup_manifest (PostgreSQL 13+), from its full text or its end:
 * the range is written after the file list. Newest timeline first, as the server writes it.
 */
export function parseManifestWalRanges(text: string): ManifestWalRange[] | undefined {
  const m = /"WAL-Ranges"\s*:\s*(\[[\s\S]*?\])/.exec(text);
  if (!m) return undefined;
  let ranges: unknown;
  try {
    ranges = JSON.parse(m[1]);
  } catch {
    return undefined;
  }
  if (
    !Array.isArray(ranges) ||
    ranges.length === 0 ||
    !ranges.every(
      (r: Partial<ManifestWalRange>) =>
        Number.isInteger(r.Timeline) &&
        typeof r['Start-LSN'] === 'string' &&
        isLsn(r['Start-LSN']) &&
        typeof r['End-LSN'] === 'string' &&
        isLsn(r['End-LSN']),
    )
  ) {
    return undefined;
  }
  return ranges as ManifestWalRange[];
}

/**
 * Where a base backup's WAL starts and stops, from the backup_label and backup_manifest
 * it carries. backup_label gives the start; the manifest (PostgreSQL 13+) both ends, and
 * must agree with the label.
 */
export function backupWalRange(label: string | undefined, manifestText: string | undefined): BackupWalRange {
  const fromLabel = label !== undefined ? parseBackupLabel(label) : {};
  const ranges = manifestText !== undefined ? parseManifestWalRanges(manifestText) : undefined;
  if (!ranges) {
    throw new DbcrateError(
      ErrorCodes.DB_TOOL_FAILED,
      manifestText === undefined
        ? 'the base backup holds no backup_manifest, so its end point is unknown'
        : 'the base backup manifest has no readable WAL-Ranges',
      { hint: 'physical backups need PostgreSQL 13 or newer (server and pg_basebackup)' },
    );
  }
  const byStart = [...ranges].sort((a, b) => (parseLsn(a['Start-LSN']) < parseLsn(b['Start-LSN']) ? -1 : 1));
  const first = byStart[0];
  const last = byStart[byStart.length - 1];
  const range: BackupWalRange = {
    startLsn: formatLsn(parseLsn(first['Start-LSN'])),
    stopLsn: formatLsn(parseLsn(last['End-LSN'])),
    timeline: first.Timeline,
    stopTimeline: last.Timeline,
  };
  if (
    (fromLabel.startLsn !== undefined && fromLabel.startLsn !== range.startLsn) ||
    (fromLabel.timeline !== undefined && fromLabel.timeline !== range.timeline)
  ) {
    throw new DbcrateError(
      ErrorCodes.DB_TOOL_FAILED,
      `backup_label (start ${fromLabel.startLsn} on timeline ${fromLabel.timeline}) and backup_manifest ` +
        `(start ${range.startLsn} on timeline ${range.timeline}) disagree`,
    );
  }
  return range;
}
