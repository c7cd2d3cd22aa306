import eslint from '@eslint/js';
import tseslint from 'typescript-eslint';

// Which libraries each library may import (its layer and those below it); anything else is
// a lint error. Specs and fixtures may also import @dbcrate/testing. libs/testing (test
// harnesses) may import any library; no library imports a service.
const BASE = ['contracts', 'core', 'compression', 'crypto', 'storage', 'postgres'];
const LIB_DEPS = {
  contracts: [],
  core: [],
  config: ['contracts', 'core'],
  compression: ['contracts', 'core'],
  crypto: ['contracts', 'core', 'compression'],
  storage: ['contracts', 'core'],
  postgres: ['contracts', 'core'],
  plumbing: BASE,
  dump: [...BASE, 'plumbing'],
  pitr: [...BASE, 'plumbing'],
  catalog: [...BASE, 'plumbing', 'dump', 'pitr'],
  messaging: ['contracts', 'core'],
  db: ['core'],
  identity: ['core'],
};
const ALL_LIBS = [...Object.keys(LIB_DEPS), 'testing'];
const DEEP = {
  group: ['@dbcrate/*/*', '**/libs/*/src/*'],
  message: 'import a library through its index (@dbcrate/x)',
};
const TESTS = ['**/*.spec.ts', '**/*.int-spec.ts', '**/*.fixture.ts'];
const layerRule = (lib, allowed) => ({
  'no-restricted-imports': [
    'error',
    {
      patterns: [
        DEEP,
        { group: ['**/services/**'], message: 'a library never imports a service' },
        {
          group: ALL_LIBS.filter((l) => l !== lib && !allowed.includes(l)).map((l) => `@dbcrate/${l}`),
          message: `libs/${lib} may import only ${allowed.length ? allowed.map((l) => '@dbcrate/' + l).join(', ') : 'no other library'} (the layers in eslint.config.mjs)`,
        },
      ],
    },
  ],
});
const layers = Object.entries(LIB_DEPS).flatMap(([lib, deps]) => [
  { files: [`libs/${lib}/src/**/*.ts`], ignores: TESTS, rules: layerRule(lib, deps) },
  { files: TESTS.map((t) => `libs/${lib}/src/${t}`), rules: layerRule(lib, [...deps, 'testing']) },
]);

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      'coverage/**',
      'bench/.data/**',
      '**/*.js',
      '**/*.mjs',
      'libs/contracts/src/gen/**',
      'libs/core/src/gen/**',
      '!bench/**/*.mjs',
    ],
  },
  eslint.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // Libraries are imported through their index (@dbcrate/x), never by deep path.
      'no-restricted-imports': ['error', { patterns: [DEEP] }],
    },
  },
  ...layers,
  {
    // Test harnesses are for tests: no service or library code outside a test imports them.
    files: ['services/**/*.ts'],
    ignores: TESTS,
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [DEEP, { group: ['@dbcrate/testing'], message: 'test harnesses are for tests only' }],
        },
      ],
    },
  },
  {
    // The bench harness is plain Node ESM: linted like the rest, with Node's globals.
    files: ['bench/**/*.mjs'],
    languageOptions: {
      sourceType: 'module',
      globals: Object.fromEntries(
        [
          'process',
          'console',
          'Buffer',
          'setTimeout',
          'clearTimeout',
          'setInterval',
          'clearInterval',
          'setImmediate',
          'URL',
          'AbortController',
          'performance',
          'fetch',
          'TextDecoder',
          'TextEncoder',
          'structuredClone',
          'queueMicrotask',
        ].map((g) => [g, 'readonly']),
      ),
    },
  },
);
