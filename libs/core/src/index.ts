export * from './errors';
export * from './redact';
export { currentScope, scopeLogger, type WorkScope } from './scope';
export * from './plugin-registry';
export * from './logger';
export * from './streams';
