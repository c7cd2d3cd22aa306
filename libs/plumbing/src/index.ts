export * from './object.names';
export * from './encoding';
export * from './progress';
export * from './verify.stream';
export * from './child-process.stream';
export * from './store-tool-output';
export * from './version';
export { WorkerStage, type WorkerEntry, type WorkerStageOptions } from './worker.stage';
export { sealStage, workerEntry, type SealSpec } from './seal.stage';
