export * from './subjects';
export * from './job.ids';
export * from './gen/dbcrate/v1/errors_pb';
export * from './gen/dbcrate/v1/jobs_pb';
export * from './gen/dbcrate/v1/reports_pb';
export * from './gen/dbcrate/v1/credentials_pb';
export * from './gen/dbcrate/v1/events_pb';
