// Two projects: `unit` (*.spec.ts, pure logic) and `integration` (*.int-spec.ts and
// test/e2e, against real PostgreSQL, s3rver, sshd, gpg, zstd).
const libs = [
  'contracts',
  'core',
  'compression',
  'crypto',
  'storage',
  'postgres',
  'plumbing',
  'dump',
  'pitr',
  'catalog',
  'messaging',
  'db',
  'identity',
  'config',
  'testing',
];
const moduleNameMapper = Object.fromEntries(libs.map((l) => [`^@dbcrate/${l}$`, `<rootDir>/libs/${l}/src`]));
const transform = {
  '^.+\\.ts$': [
    '@swc/jest',
    {
      jsc: {
        parser: { syntax: 'typescript', decorators: true },
        transform: { legacyDecorator: true, decoratorMetadata: true },
        target: 'es2022',
      },
    },
  ],
};
const common = {
  rootDir: __dirname,
  testEnvironment: 'node',
  transform,
  moduleNameMapper,
  modulePathIgnorePatterns: ['<rootDir>/dist/'],
};
module.exports = {
  projects: [
    { ...common, displayName: 'unit', testMatch: ['<rootDir>/{libs,services}/**/*.spec.ts'] },
    {
      ...common,
      displayName: 'integration',
      testMatch: ['<rootDir>/{libs,services}/**/*.int-spec.ts', '<rootDir>/test/e2e/**/*.e2e-spec.ts'],
      setupFilesAfterEnv: ['<rootDir>/libs/testing/jest/integration.setup.ts'],
    },
  ],
};
