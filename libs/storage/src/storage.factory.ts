import { FsStorage } from './fs.storage';
import type { S3StorageOptions } from './s3.storage';
import type { SftpStorageOptions } from './sftp.storage';
import type { Storage } from './storage';
import { parseStorageUrl } from './storage-url';

export interface OpenStorageOptions {
  /** Where DBCRATE_SFTP_* / AWS_* settings are read from; process.env by default. */
  env?: NodeJS.ProcessEnv;
  s3?: Omit<S3StorageOptions, 'env'>;
  sftp?: Omit<SftpStorageOptions, 'env'>;
}

/**
 * Open the storage a destination URL names. SFTP connects here, so a refused host key or
 * password fails at open time rather than halfway through a backup.
 */
export async function openStorage(url: string, opts: OpenStorageOptions = {}): Promise<Storage> {
  const env = opts.env ?? process.env;
  const cfg = parseStorageUrl(url, env);
  switch (cfg.kind) {
    case 'fs':
      return new FsStorage(cfg);
    // The S3 and SFTP SDKs cost ~100 ms to load; a file:// destination (or a wal-push) need not pay it.
    case 's3': {
      const { S3Storage } = await import('./s3.storage');
      return new S3Storage(cfg, { ...opts.s3, env });
    }
    case 'sftp': {
      const { SftpStorage } = await import('./sftp.storage');
      const s = new SftpStorage(cfg, { ...opts.sftp, env });
      await s.connect();
      return s;
    }
  }
}
