export * from './storage';
export * from './storage-url';
export { FsStorage, mapFsError } from './fs.storage';
export {
  S3Storage,
  mapS3Error,
  S3_DEFAULT_PART_SIZE,
  S3_DEFAULT_QUEUE_SIZE,
  type S3StorageOptions,
} from './s3.storage';
export { SftpStorage, mapSftpError, type SftpStorageOptions } from './sftp.storage';
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
