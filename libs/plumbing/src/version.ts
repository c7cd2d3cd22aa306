import pkg from '../../../package.json';

export const DBCRATE_VERSION: string = pkg.version;
