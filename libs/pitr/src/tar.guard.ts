import { posix } from 'node:path';
import { Transform, type TransformCallback } from 'node:stream';
import { DbcrateError, ErrorCodes } from '@dbcrate/core';

const BLOCK = 512;

/**
 * What a base backup may create, checked on the tar stream before `tar -x` sees it: only
 * regular files, directories and symlinks whose target stays inside the data directory;
 * no device nodes, FIFOs, hard links, absolute or `..` paths, nothing below a symlink, no
 * setuid/setgid bits. GNU tar run as root would otherwise create whatever the archive says
 * (a character device, a setuid-root binary). pg_basebackup never writes any of these.
 *
 * A header is checked before the chunk that completes it is passed on, so a refused entry
 * never reaches tar; the stream then fails with E_INTEGRITY.
 */
export class TarGuard extends Transform {
  /** Entries passed (regular files, directories, symlinks). */
  entries = 0;
  private header = Buffer.alloc(BLOCK);
  private headerFill = 0;
  private skip = 0; // content and padding of the current member still to pass
  private collect?: { kind: 'L' | 'K' | 'x'; size: number; chunks: Buffer[]; left: number };
  private longName?: string;
  private longLink?: string;
  private pax: Pax = {};
  // Every name and link target the extension headers of the current entry gave: which one
  // tar uses depends on their order (a later pax header replaces an earlier one), so all
  // of them must pass.
  private names: string[] = [];
  private links: string[] = [];
  private readonly symlinks = new Set<string>();
  /** Paths that a symlink's target goes through as a directory: none may become a symlink. */
  private readonly traversed = new Set<string>();
  private zeroBlocks = 0;
  private ended = false;

  constructor(private readonly what = 'the base backup') {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      this.scan(chunk);
    } catch (e) {
      return cb(e as Error);
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.skip > 0 || this.headerFill > 0 || this.collect) {
      return cb(this.refuse('the archive ends in the middle of an entry'));
    }
    cb();
  }

  private scan(chunk: Buffer): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.ended) return; // after the end-of-archive blocks: tar ignores the rest
      if (this.skip > 0) {
        const n = Math.min(this.skip, chunk.length - i);
        if (this.collect && this.collect.left > 0) {
          const take = Math.min(n, this.collect.left);
          this.collect.chunks.push(Buffer.from(chunk.subarray(i, i + take)));
          this.collect.left -= take;
        }
        this.skip -= n;
        i += n;
        if (this.skip === 0 && this.collect) this.finishExtension();
        continue;
      }
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

  private readHeader(): void {
    const h = this.header;
    if (h.every((b) => b === 0)) {
      if (++this.zeroBlocks >= 2) this.ended = true;
      return;
    }
    this.zeroBlocks = 0;
    if (!this.checksumOk(h)) throw this.refuse('an entry header is damaged (bad checksum)');
    const type = String.fromCharCode(h[156] || 0x30);
    const size =
      type === 'x' || type === 'L' || type === 'K' ? this.size(h) : (this.pax.size ?? this.size(h));
    if (!Number.isSafeInteger(size)) throw this.refuse('an entry has an unreadable size');
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    if (type === 'L' || type === 'K' || type === 'x') {
      if (size > 1024 * 1024) throw this.refuse(`an extension header of ${size} bytes`);
      this.collect = { kind: type, size, chunks: [], left: size };
      this.skip = padded;
      if (padded === 0) this.finishExtension();
      return;
    }
    const name = this.pax.path ?? this.longName ?? this.ustarName(h);
    const names = new Set([...this.names, this.ustarName(h)]);
    const links = new Set([...this.links, str(h, 157, 100)]);
    this.pax = {};
    this.longName = undefined;
    this.longLink = undefined;
    this.names = [];
    this.links = [];
    const mode = this.octal(h, 100, 8, 'mode');
    for (const n of names) for (const l of links) this.check(type, n, l, mode);
    if (type !== '0' && size > 0)
      throw this.refuse(`"${name}" is not a regular file but has ${size} bytes of content`);
    this.entries++;
    this.skip = type === '0' ? padded : 0;
  }

  private check(type: string, rawName: string, link: string, mode: number): void {
    const name = normalise(rawName);
    if (name === undefined) throw this.refuse(`the entry "${rawName}" has an absolute or ".." path`);
    const kinds: Record<string, string> = {
      '1': 'a hard link',
      '3': 'a character device',
      '4': 'a block device',
      '6': 'a FIFO',
      '7': 'a contiguous file',
      g: 'a global extended header',
      S: 'a sparse file',
    };
    if (type !== '0' && type !== '5' && type !== '2') {
      throw this.refuse(`"${rawName}" is ${kinds[type] ?? `an entry of type "${type}"`}`);
    }
    if (mode & 0o6000) {
      throw this.refuse(
        `"${rawName}" has the ${mode & 0o4000 ? 'setuid' : 'setgid'} bit (mode ${mode.toString(8)})`,
      );
    }
    if (name !== '' && this.underSymlink(name)) {
      throw this.refuse(`"${rawName}" is inside or replaces a symlink of the archive`);
    }
    if (type === '2') {
      if (name === '' || link === '' || link.startsWith('/')) {
        throw this.refuse(`the symlink "${rawName}" points to "${link}", outside the data directory`);
      }
      if (this.traversed.has(name)) {
        throw this.refuse(`the symlink "${rawName}" is on the way of another symlink's target`);
      }
      this.resolveInside(rawName, name, link);
      this.symlinks.add(name);
    }
  }

  /**
   * Walk the symlink's target from its directory, component by component: it must not leave
   * the data directory, nor go through another symlink (`s -> .`, `t -> s/..` is inside by
   * the letters and outside on disk). What it goes through is remembered, so that no later
   * entry can make a symlink of it.
   */
  private resolveInside(rawName: string, name: string, link: string): void {
    const outside = () =>
      this.refuse(`the symlink "${rawName}" points to "${link}", outside the data directory`);
    const parts = [...posix.dirname(name).split('/'), ...link.split('/')].filter(
      (p) => p !== '' && p !== '.',
    );
    const at: string[] = [];
    const via: string[] = [];
    parts.forEach((p, i) => {
      if (p === '..') {
        if (at.length === 0) throw outside();
        at.pop();
      } else at.push(p);
      if (i < parts.length - 1 && at.length > 0) {
        const dir = at.join('/');
        if (this.symlinks.has(dir)) {
          throw this.refuse(`the symlink "${rawName}" points to "${link}", through the symlink "${dir}"`);
        }
        via.push(dir);
      }
    });
    for (const d of via) this.traversed.add(d);
  }

  /** The entry is a known symlink, or lies below one (where tar would follow it). */
  private underSymlink(name: string): boolean {
    const parts = name.split('/');
    for (let k = 1; k <= parts.length; k++) if (this.symlinks.has(parts.slice(0, k).join('/'))) return true;
    return false;
  }

  private finishExtension(): void {
    const c = this.collect!;
    this.collect = undefined;
    const body = Buffer.concat(c.chunks).subarray(0, c.size);
    if (c.kind === 'L') this.names.push((this.longName = body.toString('utf8').replace(/\0.*$/s, '')));
    else if (c.kind === 'K') this.links.push((this.longLink = body.toString('utf8').replace(/\0.*$/s, '')));
    else {
      const pax = parsePax(body);
      if (pax.sparse) {
        // GNU tar takes the file's name from GNU.sparse.name; pg_basebackup writes no sparse files.
        throw this.refuse(`an entry has GNU sparse-file headers (${pax.sparse})`);
      }
      if (pax.path !== undefined) this.names.push(pax.path);
      if (pax.linkpath !== undefined) this.links.push(pax.linkpath);
      this.pax = { ...this.pax, ...pax };
    }
  }

  private ustarName(h: Buffer): string {
    const name = str(h, 0, 100);
    const magic = str(h, 257, 6);
    const prefix = magic.startsWith('ustar') && h[263] !== 0x20 ? str(h, 345, 155) : '';
    return prefix ? `${prefix}/${name}` : name;
  }

  private size(h: Buffer): number {
    if (h[124] & 0x80) {
      let v = 0;
      for (let k = 125; k < 136; k++) v = v * 256 + h[k];
      return v;
    }
    return this.octal(h, 124, 12, 'size');
  }

  private checksumOk(h: Buffer): boolean {
    const recorded = this.octal(h, 148, 8, 'checksum');
    let sum = 0;
    for (let k = 0; k < BLOCK; k++) sum += k >= 148 && k < 156 ? 0x20 : h[k];
    return recorded === sum;
  }

  /**
   * A numeric header field, as strictly as GNU tar reads it or more: tar skips a header whose
   * field it cannot read and looks for the next one in what follows, so a field this guard
   * read leniently ("0123z") would let tar take file content for headers it never saw.
   */
  private octal(h: Buffer, off: number, len: number, what: string): number {
    const text = str(h, off, len);
    if (!/^ *[0-7]+ *$/.test(text)) throw this.refuse(`an entry header has an unreadable ${what} field`);
    return Number.parseInt(text.trim(), 8);
  }

  private refuse(why: string): DbcrateError {
    return new DbcrateError(ErrorCodes.INTEGRITY, `refusing to extract ${this.what}: ${why}`, {
      hint: 'pg_basebackup never writes such entries: the backup was tampered with; nothing of it was kept',
    });
  }
}

function str(h: Buffer, off: number, len: number): string {
  const raw = h.subarray(off, off + len);
  const end = raw.indexOf(0);
  return raw.subarray(0, end === -1 ? len : end).toString('utf8');
}

/** Strip "./" and trailing "/"; undefined for absolute paths and any ".." component. */
function normalise(name: string): string | undefined {
  if (name.startsWith('/')) return undefined;
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return undefined;
  return parts.join('/');
}

interface Pax {
  path?: string;
  linkpath?: string;
  size?: number;
  /** The first GNU.sparse.* key, if any. */
  sparse?: string;
}

/** "<len> key=value\n" records; path, linkpath and size change what tar does. */
function parsePax(body: Buffer): Pax {
  const out: Pax = {};
  let i = 0;
  while (i < body.length) {
    const sp = body.indexOf(0x20, i);
    if (sp === -1) break;
    const len = Number.parseInt(body.subarray(i, sp).toString('ascii'), 10);
    if (!Number.isFinite(len) || len <= 0) break;
    const rec = body.subarray(sp + 1, i + len - 1).toString('utf8');
    const eq = rec.indexOf('=');
    const key = rec.slice(0, eq);
    if (key === 'path' || key === 'linkpath') out[key] = rec.slice(eq + 1);
    // An unreadable size would be read differently by tar: NaN makes the entry refused.
    if (key === 'size') out.size = /^\d+$/.test(rec.slice(eq + 1)) ? Number(rec.slice(eq + 1)) : NaN;
    if (key.startsWith('GNU.sparse.')) out.sparse ??= key;
    i += len;
  }
  return out;
}
