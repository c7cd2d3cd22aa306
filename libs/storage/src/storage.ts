import type { Readable } from 'node:stream';

export interface ObjectInfo {
  /** Key relative to the storage root (the URL's path/prefix). */
  key: string;
  size: number;
  lastModified?: Date;
}

export interface PutOptions {
  /** Aborting discards the partial object (multipart aborted, temp file removed). */
  signal?: AbortSignal;
  /** Refuse with E_STORAGE_CONFLICT when the key already exists. */
  ifNotExists?: boolean;
  /**
   * Called once the body is written (and, with ifNotExists, the early existence check has
   * passed), right before the step that makes the object visible (link/rename, PutObject,
   * CompleteMultipartUpload). For tests: two racers waiting on one barrier here reach the
   * atomic no-replace step together, which the early check would otherwise hide.
   */
  beforeCommit?: () => Promise<void>;
}

/**
 * The one storage interface. Keys use "/" separators and are relative to the root given
 * in the destination URL. A `put` is atomic: until it resolves, `get`/`head`/`list` never
 * see a partial object under `key` (S3 multipart, SFTP/local temp name + rename).
 */
export interface Storage {
  /** The destination URL with any secret removed; safe to print. */
  readonly displayUrl: string;
  put(key: string, body: Readable, opts?: PutOptions): Promise<{ size: number }>;
  /** Throws E_STORAGE_NOT_FOUND when the key does not exist. */
  get(key: string, opts?: { signal?: AbortSignal }): Promise<Readable>;
  head(key: string): Promise<ObjectInfo | undefined>;
  /** Every object whose key starts with `prefix`, in no guaranteed order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** Deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  /**
   * Remove the folder `dir` (a key prefix without the trailing "/") if it exists and is
   * empty; anything else is left alone. Only storages with real folders (file, SFTP) have it.
   */
  removeEmptyDir?(dir: string): Promise<void>;
  /**
   * Throw E_STORAGE_NOT_FOUND when the root folder does not exist, or is a file (storages
   * with real folders). A listing treats a missing folder as empty, so commands that only
   * read (snapshots, windows, info) call this first: a mistyped path is an error, not an
   * empty archive.
   */
  checkRoot?(): Promise<void>;
  close(): Promise<void>;
}

/** A whole (small) object in memory: manifests, identity files, WAL files. */
export async function readObject(
  storage: Storage,
  key: string,
  opts: { signal?: AbortSignal } = {},
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await storage.get(key, opts)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
