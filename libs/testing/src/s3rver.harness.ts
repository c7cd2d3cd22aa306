/**
 * A throwaway S3 endpoint (s3rver, in this process) on 127.0.0.1 for integration tests.
 *
 *   let s3: S3rverHarness;
 *   beforeAll(async () => { s3 = await startS3rver({ buckets: ['backups'] }); });
 *   afterAll(async () => { await s3?.stop(); });
 *   const url = s3.url('some/prefix'); // s3://backups/some/prefix?endpoint=…&path_style=true
 *
 * s3rver 3.7 lacks two calls dbcrate relies on: AbortMultipartUpload (it answers 405) and
 * ListMultipartUploads (501). A small middleware in front of it implements both on s3rver's
 * own upload directory, so "a failed upload leaves no multipart upload behind" is testable.
 */
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import type { Server } from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';

export const S3RVER_ACCESS_KEY_ID = 'S3RVER';
export const S3RVER_SECRET_ACCESS_KEY = 'S3RVER';

export interface S3rverOptions {
  /** Buckets created before start; default ["dbcrate-test"]. */
  buckets?: string[];
  /**
   * Honour `If-None-Match: *` on PutObject and CompleteMultipartUpload as AWS S3 does
   * (412 PreconditionFailed when the key exists), which s3rver itself ignores. Only keys
   * written through this server count; the check and the write are one step per key.
   */
  conditionalWrites?: boolean;
}

export interface OpenUpload {
  bucket: string;
  key: string;
  uploadId: string;
}

export interface S3rverHarness {
  /** http://127.0.0.1:<port> */
  endpoint: string;
  port: number;
  buckets: string[];
  /** The first bucket. */
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** s3rver's storage directory (removed by stop()). */
  directory: string;
  /** Destination URL for a prefix in a bucket (the first by default), path style, region us-east-1. */
  url(prefix?: string, bucket?: string): string;
  /** Environment for a child process (the CLI) to reach this endpoint with the test credentials. */
  env: Record<string, string>;
  /** Every request received (method, path, query, headers), oldest first; clear it with `.length = 0`. */
  requests: RecordedRequest[];
  /** Multipart uploads started and neither completed nor aborted. */
  openUploads(bucket?: string): Promise<OpenUpload[]>;
  /** Stop the server, drop open connections, delete the directory; safe to call twice. */
  stop(): Promise<void>;
}

export interface RecordedRequest {
  method: string;
  path: string;
  querystring: string;
  headers: Record<string, string | string[] | undefined>;
}

interface KoaContext {
  method: string;
  path: string;
  querystring: string;
  headers: Record<string, string | string[] | undefined>;
  query: Record<string, string | string[] | undefined>;
  status: number;
  body: unknown;
  type: string;
}
type KoaMiddleware = (ctx: KoaContext, next: () => Promise<void>) => Promise<void>;
interface S3rverInstance {
  middleware: KoaMiddleware[];
  httpServer?: Server;
  run(): Promise<{ address: string; port: number }>;
  close(): Promise<void>;
}
type S3rverCtor = new (opts: Record<string, unknown>) => S3rverInstance;

const UPLOADS_DIR = '._S3rver_uploads';

function xmlEscape(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

function xmlError(ctx: KoaContext, status: number, code: string, message: string): void {
  ctx.status = status;
  ctx.type = 'application/xml';
  ctx.body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${xmlEscape(message)}</Message></Error>`;
}

async function listUploads(dir: string, bucket: string): Promise<OpenUpload[]> {
  const base = path.join(dir, bucket, UPLOADS_DIR);
  let ids: string[];
  try {
    ids = await fs.promises.readdir(base);
  } catch {
    return [];
  }
  const out: OpenUpload[] = [];
  for (const uploadId of ids) {
    try {
      const key = await fs.promises.readFile(path.join(base, uploadId, 'key'), 'utf8');
      out.push({ bucket, key, uploadId });
    } catch {
      // completed or aborted meanwhile
    }
  }
  return out;
}

/** ListMultipartUploads and AbortMultipartUpload, which s3rver itself does not implement. */
function multipartShim(dir: string, requests: RecordedRequest[]): KoaMiddleware {
  return async (ctx, next) => {
    if (requests.length < 10_000) {
      requests.push({
        method: ctx.method,
        path: ctx.path,
        querystring: ctx.querystring,
        headers: { ...ctx.headers },
      });
    }
    const [, bucket, ...rest] = ctx.path.split('/');
    const key = decodeURIComponent(rest.join('/'));
    if (ctx.method === 'GET' && bucket && !key && 'uploads' in ctx.query) {
      if (!fs.existsSync(path.join(dir, bucket)))
        return xmlError(ctx, 404, 'NoSuchBucket', 'The specified bucket does not exist');
      const prefix = typeof ctx.query.prefix === 'string' ? ctx.query.prefix : '';
      const uploads = (await listUploads(dir, bucket)).filter((u) => u.key.startsWith(prefix));
      ctx.status = 200;
      ctx.type = 'application/xml';
      ctx.body =
        `<?xml version="1.0" encoding="UTF-8"?>\n<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
        `<Bucket>${xmlEscape(bucket)}</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>` +
        `<MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>` +
        uploads
          .map(
            (u) =>
              `<Upload><Key>${xmlEscape(u.key)}</Key><UploadId>${xmlEscape(u.uploadId)}</UploadId>` +
              `<Initiated>${new Date().toISOString()}</Initiated><StorageClass>STANDARD</StorageClass></Upload>`,
          )
          .join('') +
        `</ListMultipartUploadsResult>`;
      return;
    }
    if (ctx.method === 'DELETE' && bucket && key && typeof ctx.query.uploadId === 'string') {
      const uploadId = ctx.query.uploadId;
      const updir = path.join(dir, bucket, UPLOADS_DIR, path.basename(uploadId));
      if (!fs.existsSync(updir))
        return xmlError(ctx, 404, 'NoSuchUpload', 'The specified upload does not exist');
      await fs.promises.rm(updir, { recursive: true, force: true });
      ctx.status = 204;
      ctx.body = null;
      return;
    }
    await next();
  };
}

/** If-None-Match: * for PutObject and CompleteMultipartUpload (see S3rverOptions.conditionalWrites). */
function conditionalShim(): KoaMiddleware {
  const taken = new Set<string>();
  return async (ctx, next) => {
    const [, bucket, ...rest] = ctx.path.split('/');
    const key = `${bucket}/${decodeURIComponent(rest.join('/'))}`;
    const isPut = ctx.method === 'PUT' && !('partNumber' in ctx.query) && !ctx.headers['x-amz-copy-source'];
    const isComplete = ctx.method === 'POST' && typeof ctx.query.uploadId === 'string';
    if (!bucket || !rest.length || !(isPut || isComplete)) {
      await next();
      if (ctx.method === 'DELETE' && ctx.status < 300 && !('uploadId' in ctx.query)) taken.delete(key);
      return;
    }
    if (ctx.headers['if-none-match'] === '*' && taken.has(key))
      return xmlError(
        ctx,
        412,
        'PreconditionFailed',
        'At least one of the pre-conditions you specified did not hold',
      );
    const fresh = !taken.has(key);
    taken.add(key); // reserved before s3rver writes: a second conditional write now fails
    try {
      await next();
    } finally {
      if (fresh && ctx.status >= 300) taken.delete(key);
    }
  };
}

const live = new Set<() => void>();
let exitHook = false;

export async function startS3rver(opts: S3rverOptions = {}): Promise<S3rverHarness> {
  const buckets = opts.buckets?.length ? opts.buckets : ['dbcrate-test'];
  const directory = fs.mkdtempSync(path.join(os.tmpdir(), 'dbcrate-s3rver-'));
  // s3rver ships no types; load it untyped and describe the little we use.
  const S3rver = createRequire(__filename)('s3rver') as S3rverCtor;
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: buckets.map((name) => ({ name })),
    // Each harness has its own directory; nothing to keep between runs.
    resetOnClose: false,
  });
  const requests: RecordedRequest[] = [];
  server.middleware.unshift(multipartShim(directory, requests));
  if (opts.conditionalWrites) server.middleware.splice(1, 0, conditionalShim());
  let port: number;
  try {
    ({ port } = await server.run());
  } catch (e) {
    fs.rmSync(directory, { recursive: true, force: true });
    throw e;
  }
  const endpoint = `http://127.0.0.1:${port}`;
  const removeDir = (): void => fs.rmSync(directory, { recursive: true, force: true });
  live.add(removeDir);
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => live.forEach((f) => f()));
  }
  let stopped = false;
  return {
    endpoint,
    port,
    buckets,
    bucket: buckets[0],
    accessKeyId: S3RVER_ACCESS_KEY_ID,
    secretAccessKey: S3RVER_SECRET_ACCESS_KEY,
    directory,
    requests,
    url(prefix = '', bucket = buckets[0]) {
      const p = prefix.replace(/^\/+/, '');
      return `s3://${bucket}/${p}?endpoint=${endpoint}&region=us-east-1&path_style=true`;
    },
    env: {
      AWS_ACCESS_KEY_ID: S3RVER_ACCESS_KEY_ID,
      AWS_SECRET_ACCESS_KEY: S3RVER_SECRET_ACCESS_KEY,
      AWS_REGION: 'us-east-1',
    },
    async openUploads(bucket?: string) {
      const list = await Promise.all((bucket ? [bucket] : buckets).map((b) => listUploads(directory, b)));
      return list.flat();
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      // Keep-alive sockets of SDK clients would hold close() open.
      server.httpServer?.closeAllConnections();
      await server.close().catch(() => undefined);
      live.delete(removeDir);
      removeDir();
    },
  };
}

/** A bucket name unique to this call, for tests sharing one s3rver. */
export function uniqueBucketName(base = 'dbcrate'): string {
  return `${base}-${randomBytes(4).toString('hex')}`;
}
