export * from './archive.info';
