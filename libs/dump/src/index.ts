export * from './layout';
export * from './manifest';
export * from './snapshots';
export * from './backup.pipeline';
export * from './restore.pipeline';
