import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
} from '@aws-sdk/client-s3';
import { DbcrateError, ErrorCodes, logger, redact, registerSecret } from '@dbcrate/core';
import type { ObjectInfo, PutOptions, Storage } from './storage';
import { S3_MAX_PARTS, S3_MIN_PART_SIZE, type S3StorageConfig } from './storage-url';
import {
  causeText,
  checkKey,
  checkPrefix,
  chunksOf,
  discard,
  interrupted,
  isSourceError,
  OP_VERB,
  type StorageOp,
} from './storage.util';

const MiB = 1024 * 1024;

/**
 * Part size and memory.
 *
 * R2 (and our own rule) wants every part but the last to be the same size, and S3 allows at
 * most 10,000 parts, so for a stream of unknown length the part size alone sets the largest
 * object: 1 TiB / 10,000 = 104.86 MiB is the floor. Default: 105 MiB (10,000 parts =
 * 1.0014 TiB); a bigger database needs part_size= in the URL.
 *
 * A part must be in memory whole before it is sent: its Content-Length is fixed up front and
 * only a buffered part can be retried (the SDK never retries a streamed body), and retries
 * matter: one transient 500 among thousands of parts must not fail a 1 TiB backup. So the
 * memory bound is queue_size × part_size. lib-storage's Upload cannot hold that bound: it
 * gathers chunks, Buffer.concat()s them (two copies of a part at once) and keeps the rest as
 * a view of the old buffer. Here each part buffer is allocated once per upload and filled in
 * place, and the default queue_size=1 reads a part, sends it, then reads the next.
 *
 * Measured (1 GiB to s3rver, queue 1, peak RSS over the process baseline): this code +119 MiB
 * with 105 MiB parts (+126 MiB with 112 MiB parts); lib-storage Upload with 112 MiB parts
 * +345 MiB (~3× part size). A bare process with the SDK, openpgp, ssh2 and zstd loaded is
 * ~71 MiB, so an upload peaks near 190 MiB, inside the 256 MB budget; what is left is for the
 * compress/encrypt stages (whose short-lived chunks V8 collects lazily: up to ~50 MiB more).
 * queue_size=2+ overlaps reading with sending at queue_size × part_size; a smaller part_size
 * trades the 1 TiB ceiling for memory. Pages are committed only as they are written, so small
 * objects (WAL segments, manifests) cost only their own size.
 */
export const S3_DEFAULT_PART_SIZE = 105 * MiB;
export const S3_DEFAULT_QUEUE_SIZE = 1;
/** Bodies up to this size are sent as one PutObject without a part buffer (every WAL segment). */
export const S3_SMALL_PUT = 20 * MiB;

export interface S3StorageOptions {
  /** Programmatic credentials (e.g. fetched per job); otherwise the SDK default chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  partSize?: number;
  queueSize?: number;
  /** TCP connect timeout; an unreachable endpoint fails after maxAttempts × this. */
  connectTimeoutMs?: number;
  /** Idle socket timeout while a request is in progress. */
  socketTimeoutMs?: number;
  maxAttempts?: number;
  env?: NodeJS.ProcessEnv;
}

type Op = StorageOp;
const VERB = OP_VERB;

interface SdkError {
  name?: string;
  Code?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $fault?: string;
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ECONNABORTED',
  'EPROTO',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
]);
const DENIED_NAMES = new Set([
  'AccessDenied',
  'Forbidden',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'AllAccessDisabled',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
  'AccountProblem',
  'CredentialsProviderError',
  'InvalidSecurity',
  'Unauthorized',
]);

/** Map an SDK error to a typed one. The message names the object and the destination, never a key. */
export function mapS3Error(
  e: unknown,
  op: Op,
  target: string,
  where: string,
  endpoint?: string,
): DbcrateError {
  if (e instanceof DbcrateError) return e;
  const err = (e ?? {}) as SdkError;
  const name = err.name && err.name !== 'Error' ? err.name : (err.Code ?? err.code ?? 'Error');
  const status = err.$metadata?.httpStatusCode;
  const head = `cannot ${VERB[op]} ${target} in ${where}`;
  const detail = `${name}${status ? `, HTTP ${status}` : ''}`;
  const text = redact(causeText(e));
  const reason = text && text !== name && text !== 'UnknownError' ? `${text} (${detail})` : detail;

  if (name === 'NoSuchBucket') {
    return new DbcrateError(ErrorCodes.STORAGE_NOT_FOUND, `${head}: the bucket does not exist (${detail})`, {
      cause: e,
      hint: 'create the bucket first, or fix its name (the host part of the s3:// URL)',
    });
  }
  if (name === 'NoSuchKey' || (name === 'NotFound' && status === 404)) {
    return new DbcrateError(ErrorCodes.STORAGE_NOT_FOUND, `${head}: it does not exist (${detail})`, {
      cause: e,
    });
  }
  if (DENIED_NAMES.has(name) || status === 401 || status === 403) {
    const creds = name === 'CredentialsProviderError' || /credential/i.test(text);
    return new DbcrateError(
      ErrorCodes.STORAGE_DENIED,
      creds ? `${head}: no S3 credentials found` : `${head}: access denied (${detail})`,
      {
        cause: e,
        hint: creds
          ? 'set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE / profile= naming a profile in ~/.aws/credentials'
          : name === 'SignatureDoesNotMatch'
            ? 'the secret access key does not match the access key id; check AWS_SECRET_ACCESS_KEY or the profile'
            : name === 'InvalidAccessKeyId'
              ? 'the access key id is unknown to this endpoint; check AWS_ACCESS_KEY_ID, the profile and endpoint='
              : `check that the credentials allow s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject and s3:AbortMultipartUpload on this bucket`,
      },
    );
  }
  if (name === 'PreconditionFailed' || status === 412 || name === 'ConditionalRequestConflict') {
    return new DbcrateError(ErrorCodes.STORAGE_CONFLICT, `${head}: it already exists (${detail})`, {
      cause: e,
    });
  }
  const code = err.code ?? '';
  if (
    NETWORK_CODES.has(code) ||
    name === 'TimeoutError' ||
    name === 'RequestTimeout' ||
    /ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|socket hang up|timed out|getaddrinfo/i.test(
      text,
    )
  ) {
    return new DbcrateError(
      ErrorCodes.STORAGE_UNREACHABLE,
      `${head}: the S3 endpoint is unreachable: ${text}`,
      {
        cause: e,
        hint: `check the endpoint (${endpoint ?? 'AWS default'}), the network, and for TLS errors the endpoint's certificate`,
      },
    );
  }
  if (name === 'PermanentRedirect' || status === 301) {
    return new DbcrateError(ErrorCodes.STORAGE_IO, `${head}: the bucket is in another region (${detail})`, {
      cause: e,
      hint: "set region= in the URL to the bucket's region",
    });
  }
  return new DbcrateError(ErrorCodes.STORAGE_IO, `${head}: ${reason}`, { cause: e });
}

function isAbort(e: unknown): boolean {
  const n = (e as { name?: string })?.name;
  return n === 'AbortError' || (e instanceof DbcrateError && e.code === ErrorCodes.INTERRUPTED);
}

/** SDK log output goes to our logger at debug (it can mention requests; never credentials). */
const sdkLogger = {
  trace: (): void => undefined,
  debug: (): void => undefined,
  info: (): void => undefined,
  warn: (...a: unknown[]): void => logger().debug({ sdk: a.map(String).join(' ') }, 's3 sdk warning'),
  error: (...a: unknown[]): void => logger().debug({ sdk: a.map(String).join(' ') }, 's3 sdk error'),
};

export class S3Storage implements Storage {
  readonly displayUrl: string;
  readonly partSize: number;
  readonly queueSize: number;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly endpoint?: string;
  /** Cleared after a provider answers 501 to If-None-Match, so later puts skip the header. */
  private conditionalWrites = true;

  constructor(cfg: S3StorageConfig, opts: S3StorageOptions = {}) {
    const env = opts.env ?? process.env;
    this.displayUrl = cfg.displayUrl;
    this.bucket = cfg.bucket;
    this.prefix = cfg.prefix;
    this.endpoint = cfg.endpoint;
    this.partSize = opts.partSize ?? cfg.partSize ?? S3_DEFAULT_PART_SIZE;
    this.queueSize = opts.queueSize ?? cfg.queueSize ?? S3_DEFAULT_QUEUE_SIZE;
    if (this.partSize < S3_MIN_PART_SIZE) {
      throw new DbcrateError(ErrorCodes.CONFIG, `S3 part size ${this.partSize} is below the 5 MiB minimum`);
    }
    // Keys handed in through `env` (not process.env) are not seen by the SDK's chain.
    const credentials =
      opts.credentials ??
      (env !== process.env && !cfg.profile && env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY
        ? {
            accessKeyId: env.AWS_ACCESS_KEY_ID,
            secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
            ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
          }
        : undefined);
    registerSecret(opts.credentials?.secretAccessKey);
    registerSecret(opts.credentials?.sessionToken);
    registerSecret(env.AWS_SECRET_ACCESS_KEY);
    registerSecret(env.AWS_SESSION_TOKEN);
    const checksums = cfg.checksums;
    this.client = new S3Client({
      region: cfg.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
      endpoint: cfg.endpoint,
      forcePathStyle: cfg.forcePathStyle,
      followRegionRedirects: true,
      ...(cfg.profile ? { profile: cfg.profile } : {}),
      ...(credentials ? { credentials } : {}),
      // The SDK's default CRC32 checksums (2025) break R2, B2 and Wasabi; only send and check
      // them where an operation requires it, unless the URL asks for checksums=when_supported.
      requestChecksumCalculation: checksums,
      responseChecksumValidation: checksums,
      // Fail an unreachable endpoint in seconds: 3 attempts × 5 s connect timeout at worst.
      maxAttempts: opts.maxAttempts ?? 3,
      requestHandler: {
        connectionTimeout: opts.connectTimeoutMs ?? 5000,
        socketTimeout: opts.socketTimeoutMs ?? 30_000,
      },
      logger: sdkLogger,
    });
  }

  private full(key: string): string {
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  private fail(e: unknown, op: Op, key: string): DbcrateError {
    return mapS3Error(e, op, `"${key}"`, this.displayUrl, this.endpoint);
  }

  async put(key: string, body: Readable, opts: PutOptions = {}): Promise<{ size: number }> {
    checkKey(key);
    const what = `upload of "${key}" to ${this.displayUrl}`;
    // One controller for every request of this upload: the caller's abort or our own
    // failure cancels parts still in flight before the upload is aborted.
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const upload = new PartUpload(this, key, this.full(key), body, opts, ctl.signal, what);
    try {
      if (opts.signal?.aborted) throw interrupted(what);
      if (opts.ifNotExists && (await this.head(key))) throw this.conflict(key);
      return { size: await upload.run() };
    } catch (e) {
      ctl.abort();
      discard(body);
      const cleanup = await upload.cleanup();
      if (opts.signal?.aborted || isAbort(e)) throw interrupted(what);
      if (isSourceError(e)) throw e;
      const err = this.fail(e, 'write', key);
      if (!cleanup) throw err;
      throw new DbcrateError(err.code, err.message, {
        cause: err.cause,
        hint: [err.hint, cleanup].filter(Boolean).join('\n'),
      });
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  conflict(key: string): DbcrateError {
    return new DbcrateError(ErrorCodes.STORAGE_CONFLICT, `"${key}" already exists in ${this.displayUrl}`, {
      hint: 'objects are never overwritten; choose another name or delete the existing object first',
    });
  }

  /** @internal PutObject / CompleteMultipartUpload with If-None-Match where the provider has it. */
  async sendConditional<T>(ifNotExists: boolean, send: (conditional: boolean) => Promise<T>): Promise<T> {
    const conditional = ifNotExists && this.conditionalWrites;
    try {
      return await send(conditional);
    } catch (e) {
      const err = e as SdkError;
      if (conditional && (err.$metadata?.httpStatusCode === 501 || err.name === 'NotImplemented')) {
        // Provider without conditional writes: the HeadObject check before the upload stands alone.
        this.conditionalWrites = false;
        return send(false);
      }
      throw e;
    }
  }

  /** @internal */
  get s3(): S3Client {
    return this.client;
  }
  /** @internal */
  get bucketName(): string {
    return this.bucket;
  }

  async get(key: string, opts: { signal?: AbortSignal } = {}): Promise<Readable> {
    checkKey(key);
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.full(key) }), {
        abortSignal: opts.signal,
      });
      return res.Body as Readable;
    } catch (e) {
      if (opts.signal?.aborted) throw interrupted(`download of "${key}" from ${this.displayUrl}`);
      throw this.fail(e, 'read', key);
    }
  }

  async head(key: string): Promise<ObjectInfo | undefined> {
    checkKey(key);
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.full(key) }));
      return { key, size: res.ContentLength ?? 0, lastModified: res.LastModified };
    } catch (e) {
      const err = e as SdkError;
      if (err.name === 'NotFound' || err.name === 'NoSuchKey' || err.$metadata?.httpStatusCode === 404) {
        return undefined;
      }
      throw this.fail(e, 'stat', key);
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    checkPrefix(prefix);
    const root = this.prefix ? `${this.prefix}/` : '';
    let token: string | undefined;
    do {
      let res;
      try {
        res = await this.client.send(
          new ListObjectsV2Command({ Bucket: this.bucket, Prefix: root + prefix, ContinuationToken: token }),
        );
      } catch (e) {
        throw mapS3Error(e, 'list', prefix ? `"${prefix}*"` : 'objects', this.displayUrl, this.endpoint);
      }
      for (const o of res.Contents ?? []) {
        // "Folder" marker objects some tools create are not objects of ours.
        if (!o.Key || o.Key.endsWith('/') || !o.Key.startsWith(root)) continue;
        yield { key: o.Key.slice(root.length), size: o.Size ?? 0, lastModified: o.LastModified };
      }
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.full(key) }));
    } catch (e) {
      // S3 answers 204 for a missing key; some providers say NoSuchKey instead.
      if ((e as SdkError).name === 'NoSuchKey') return;
      throw this.fail(e, 'delete', key);
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

/**
 * One upload: a single PutObject when the body fits in one part, otherwise a multipart
 * upload of equal parts from a pool of `queueSize` reusable part buffers.
 */
class PartUpload {
  private uploadId?: string;
  private readonly parts: CompletedPart[] = [];
  private readonly inflight = new Set<Promise<void>>();
  private failure: unknown;
  private readonly free: Buffer[] = [];
  private allocated = 0;
  private carry?: Buffer;
  private eof = false;
  private readonly source: AsyncIterator<Buffer>;

  constructor(
    private readonly s: S3Storage,
    private readonly key: string,
    private readonly fullKey: string,
    body: Readable,
    private readonly opts: PutOptions,
    private readonly signal: AbortSignal,
    what: string,
  ) {
    this.source = chunksOf(body, opts.signal, what)[Symbol.asyncIterator]();
  }

  async run(): Promise<number> {
    const { s, fullKey } = this;
    // A small body (a WAL segment, a manifest) is one PutObject from what was read, without
    // reserving a whole part buffer; a bigger one continues as part 1 of a multipart upload.
    const small = Math.min(s.partSize, S3_SMALL_PUT);
    const head: Buffer[] = [];
    let headBytes = 0;
    while (headBytes <= small) {
      const r = await this.source.next();
      if (r.done) {
        const data = head.length === 1 ? head[0] : Buffer.concat(head);
        await this.putSingle(data);
        return data.length;
      }
      head.push(r.value);
      headBytes += r.value.length;
    }
    this.carry = Buffer.concat(head);
    let partNumber = 0;
    let total = 0;
    for (;;) {
      const buf = await this.takeBuffer();
      const n = await this.fill(buf);
      this.throwIfFailed();
      if (partNumber === 0 && this.eof) {
        await this.putSingle(buf.subarray(0, n));
        return n;
      }
      if (n === 0) break;
      partNumber += 1;
      if (partNumber > S3_MAX_PARTS) {
        throw new DbcrateError(
          ErrorCodes.STORAGE_IO,
          `"${this.key}" is larger than ${S3_MAX_PARTS} parts × ${s.partSize} bytes, the most S3 takes in one object`,
          {
            hint: 'raise part_size= in the destination URL (it sets the largest object: 10,000 × part_size)',
          },
        );
      }
      this.uploadId ??= await this.create();
      total += n;
      this.startPart(partNumber, buf, n);
      if (this.eof) break;
    }
    await Promise.all(this.inflight);
    this.throwIfFailed();
    await this.opts.beforeCommit?.();
    this.parts.sort((a, b) => (a.PartNumber ?? 0) - (b.PartNumber ?? 0));
    const uploadId = this.uploadId;
    await s.sendConditional(this.opts.ifNotExists === true, (conditional) =>
      s.s3.send(
        new CompleteMultipartUploadCommand({
          Bucket: s.bucketName,
          Key: fullKey,
          UploadId: uploadId,
          MultipartUpload: { Parts: this.parts },
          ...(conditional ? { IfNoneMatch: '*' } : {}),
        }),
        { abortSignal: this.signal },
      ),
    );
    this.uploadId = undefined;
    return total;
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private async takeBuffer(): Promise<Buffer> {
    for (;;) {
      this.throwIfFailed();
      const b = this.free.pop();
      if (b) return b;
      if (this.allocated < this.s.queueSize) {
        this.allocated += 1;
        // Uninitialised and outside the pool: pages are committed only as they are filled.
        return Buffer.allocUnsafeSlow(this.s.partSize);
      }
      await Promise.race(this.inflight);
    }
  }

  /** Fill `buf` from the source; returns the bytes written (less than its length only at the end). */
  private async fill(buf: Buffer): Promise<number> {
    let n = 0;
    while (n < buf.length && this.failure === undefined) {
      if (!this.carry) {
        const r = await this.source.next();
        if (r.done) {
          this.eof = true;
          break;
        }
        if (r.value.length === 0) continue;
        this.carry = r.value;
      }
      const take = Math.min(this.carry.length, buf.length - n);
      this.carry.copy(buf, n, 0, take);
      n += take;
      this.carry = take < this.carry.length ? this.carry.subarray(take) : undefined;
    }
    return n;
  }

  private async putSingle(data: Buffer): Promise<void> {
    const { s } = this;
    await this.opts.beforeCommit?.();
    await s.sendConditional(this.opts.ifNotExists === true, (conditional) =>
      s.s3.send(
        new PutObjectCommand({
          Bucket: s.bucketName,
          Key: this.fullKey,
          Body: data,
          ContentLength: data.length,
          ContentType: 'application/octet-stream',
          ...(conditional ? { IfNoneMatch: '*' } : {}),
        }),
        { abortSignal: this.signal },
      ),
    );
  }

  private async create(): Promise<string> {
    const res = await this.s.s3.send(
      new CreateMultipartUploadCommand({
        Bucket: this.s.bucketName,
        Key: this.fullKey,
        ContentType: 'application/octet-stream',
      }),
      { abortSignal: this.signal },
    );
    if (!res.UploadId) throw new Error('CreateMultipartUpload returned no UploadId');
    return res.UploadId;
  }

  private startPart(partNumber: number, buf: Buffer, n: number): void {
    const p = this.s.s3
      .send(
        new UploadPartCommand({
          Bucket: this.s.bucketName,
          Key: this.fullKey,
          UploadId: this.uploadId,
          PartNumber: partNumber,
          Body: buf.subarray(0, n),
          ContentLength: n,
        }),
        { abortSignal: this.signal },
      )
      .then((res) => {
        if (!res.ETag) throw new Error(`UploadPart ${partNumber} returned no ETag`);
        this.parts.push({ PartNumber: partNumber, ETag: res.ETag });
        this.free.push(buf);
      })
      .catch((e: unknown) => {
        this.failure ??= e;
      })
      .finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  /**
   * After a failure: let parts in flight settle (they were cancelled), then abort the
   * multipart upload so no parts stay billed. Returns a hint when that did not work.
   */
  async cleanup(): Promise<string | undefined> {
    await Promise.allSettled([...this.inflight]);
    await this.source.return?.(undefined).catch(() => undefined);
    const uploadId = this.uploadId;
    if (!uploadId) return undefined;
    this.uploadId = undefined;
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        await this.s.s3.send(
          new AbortMultipartUploadCommand({
            Bucket: this.s.bucketName,
            Key: this.fullKey,
            UploadId: uploadId,
          }),
          { abortSignal: AbortSignal.timeout(30_000) },
        );
        return undefined;
      } catch (e) {
        const err = e as SdkError;
        if (err.name === 'NoSuchUpload' || err.$metadata?.httpStatusCode === 404) return undefined;
        logger().warn({ key: this.fullKey, attempt, err: causeText(e) }, 'could not abort multipart upload');
      }
    }
    return (
      `an incomplete multipart upload of "${this.key}" (upload id ${uploadId}) may remain; ` +
      'a bucket lifecycle rule "AbortIncompleteMultipartUpload" removes such leftovers'
    );
  }
}
