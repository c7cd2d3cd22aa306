export * from './pg-cluster.harness';
export * from './ports';
export * from './s3rver.harness';
export * from './sshd.harness';
export * from './cli.harness';
export * from './stream.harness';
export * from './stale-dirs';
export * from './pitr.harness';
