export * from './errors';
export * from './redact';
export * from './plugin-registry';
export * from './logger';
export * from './streams';
