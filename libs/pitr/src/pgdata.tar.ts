/**
 * Tar (ustar, POSIX pax headers for what ustar cannot hold) headers for the members of a
 * pgdata base backup: regular files and directories only, read by GNU tar and the tar guard.
 */
export const TAR_BLOCK = 512;

export interface TarMember {
  /** Relative path inside the archive, '/'-separated; directories without a trailing '/'. */
  path: string;
  type: 'file' | 'dir';
  size: number;
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
}

const USTAR_NAME = 100;
const USTAR_PREFIX = 155;
const OCTAL_SIZE_MAX = 0o77777777777; // 11 octal digits

function writeString(h: Buffer, off: number, len: number, value: string): void {
  h.write(value, off, Math.min(len, Buffer.byteLength(value)), 'utf8');
}

function writeOctal(h: Buffer, off: number, len: number, value: number): void {
  h.write(value.toString(8).padStart(len - 1, '0') + '\0', off, len, 'ascii');
}

/** Split a path into ustar's prefix and name fields, or undefined when it does not fit. */
function splitUstar(p: string): { prefix: string; name: string } | undefined {
  if (Buffer.byteLength(p) <= USTAR_NAME) return { prefix: '', name: p };
  for (let i = p.indexOf('/'); i !== -1; i = p.indexOf('/', i + 1)) {
    const prefix = p.slice(0, i);
    const name = p.slice(i + 1);
    if (Buffer.byteLength(prefix) <= USTAR_PREFIX && Buffer.byteLength(name) <= USTAR_NAME && name) {
      return { prefix, name };
    }
  }
  return undefined;
}

function header(
  name: string,
  prefix: string,
  typeflag: string,
  m: Pick<TarMember, 'size' | 'mode' | 'uid' | 'gid' | 'mtime'>,
): Buffer {
  const h = Buffer.alloc(TAR_BLOCK);
  writeString(h, 0, USTAR_NAME, name);
  writeOctal(h, 100, 8, m.mode & 0o7777);
  writeOctal(h, 108, 8, Math.min(m.uid, 0o7777777));
  writeOctal(h, 116, 8, Math.min(m.gid, 0o7777777));
  writeOctal(h, 124, 12, Math.min(m.size, OCTAL_SIZE_MAX));
  writeOctal(h, 136, 12, Math.max(0, Math.min(m.mtime, OCTAL_SIZE_MAX)));
  h.fill(0x20, 148, 156);
  h.write(typeflag, 156, 1, 'ascii');
  h.write('ustar\0', 257, 6, 'ascii');
  h.write('00', 263, 2, 'ascii');
  writeString(h, 345, USTAR_PREFIX, prefix);
  let sum = 0;
  for (let k = 0; k < TAR_BLOCK; k++) sum += h[k];
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'ascii');
  return h;
}

/** One pax record: "<length> key=value\n", the length counting itself. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body);
  let len = bodyLen + 1;
  while (bodyLen + String(len).length !== len) len = bodyLen + String(len).length;
  return `${len}${body}`;
}

function padding(size: number): number {
  return (TAR_BLOCK - (size % TAR_BLOCK)) % TAR_BLOCK;
}

/** The header block(s) of one member; content and `contentPadding` follow for files. */
export function tarHeader(m: TarMember): Buffer {
  const path = m.type === 'dir' ? `${m.path}/` : m.path;
  const split = splitUstar(path);
  const records: string[] = [];
  if (!split) records.push(paxRecord('path', path));
  if (m.size > OCTAL_SIZE_MAX) records.push(paxRecord('size', String(m.size)));
  const own = header(
    split?.name ?? path.slice(-USTAR_NAME).replace(/^\/+/, ''),
    split?.prefix ?? '',
    m.type === 'dir' ? '5' : '0',
    { ...m, size: m.type === 'dir' ? 0 : m.size },
  );
  if (records.length === 0) return own;
  const body = Buffer.from(records.join(''));
  const ext = header('././@PaxHeader', '', 'x', { ...m, size: body.length, mode: 0o644 });
  return Buffer.concat([ext, body, Buffer.alloc(padding(body.length)), own]);
}

/** Zeros after a file's content up to the next block. */
export function contentPadding(size: number): Buffer {
  return Buffer.alloc(padding(size));
}

/** The end-of-archive marker: two zero blocks. */
export const TAR_END = Buffer.alloc(2 * TAR_BLOCK);
