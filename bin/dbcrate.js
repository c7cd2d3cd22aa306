#!/usr/bin/env node
'use strict';
// Thin launcher so `npx dbcrate` and `npm link` work after `npm run build`.
const path = require('node:path');
const fs = require('node:fs');
const entry = path.join(__dirname, '..', 'dist', 'services', 'cli', 'src', 'main.js');
if (!fs.existsSync(entry)) {
  process.stderr.write('dbcrate: not built yet. Run `npm run build` in ' + path.join(__dirname, '..') + '\n');
  process.exit(2);
}
require(entry);
