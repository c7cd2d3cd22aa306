export * from './identity.ca';
