export * from './storage';
export * from './storage-url';
export { FsStorage, mapFsError } from './fs.storage';
// S3 and SFTP backends load lazily through openStorage (their SDKs are heavy); types only here.
export type { S3StorageOptions } from './s3.storage';
export type { SftpStorageOptions } from './sftp.storage';
export { fingerprintOf, knownHostEntries } from './known-hosts';
export { openStorage, type OpenStorageOptions } from './storage.factory';
export {
  probeStorage,
  PROBE_PREFIX,
  type ProbeResult,
  type ProbeStep,
  type ProbeStepName,
} from './storage.probe';
export { isTempName } from './storage.util';
