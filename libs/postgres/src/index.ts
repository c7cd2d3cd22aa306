export * from './conninfo';
export * from './server';
export * from './tools';
export * from './process';
