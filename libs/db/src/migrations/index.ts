import { Initial1796688949938 } from './1796688949938-Initial';

// In order; a new migration is appended (scripts/db-migration.mjs), an applied one never edited.
export const MIGRATIONS: (new () => unknown)[] = [Initial1796688949938];
