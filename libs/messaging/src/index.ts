export * from './messaging.codec';
export * from './messaging.retry';
export * from './messaging.topology';
export * from './messaging.consumer';
export * from './messaging.publish';
