import eslint from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'dist/**',
      'node_modules/**',
      'coverage/**',
      'bench/.data/**',
      '**/*.js',
      '**/*.mjs',
      '!bench/**/*.mjs',
    ],
  },
  eslint.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // Libraries are imported through their index (@dbcrate/x), never by deep path.
      'no-restricted-imports': ['error', { patterns: ['@dbcrate/*/*', '**/libs/*/src/*'] }],
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
