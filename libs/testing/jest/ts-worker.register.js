// Preloaded (--require) into worker threads started from TypeScript sources under jest:
// compiles .ts with swc as jest does and maps @dbcrate/<lib> to libs/<lib>/src.
'use strict';
const Module = require('node:module');
const path = require('node:path');
const { transformSync } = require('@swc/core');

const libs = path.resolve(__dirname, '..', '..');
const resolve = Module._resolveFilename;
Module._resolveFilename = function (request, ...rest) {
  const m = /^@dbcrate\/([a-z]+)$/.exec(request);
  return resolve.call(this, m ? path.join(libs, m[1], 'src', 'index.ts') : request, ...rest);
};
if (!Module._extensions['.ts']) {
  Module._extensions['.ts'] = function (module, filename) {
    const source = require('node:fs').readFileSync(filename, 'utf8');
    const { code } = transformSync(source, {
      filename,
      jsc: {
        parser: { syntax: 'typescript', decorators: true },
        transform: { legacyDecorator: true, decoratorMetadata: true },
        target: 'es2022',
      },
      module: { type: 'commonjs' },
      sourceMaps: 'inline',
    });
    module._compile(code, filename);
  };
}
