export * from './organisation.entity';
export * from './agent.entity';
export * from './database.entity';
export * from './job.entity';
export * from './job.states';
export * from './db.datasource';
