#!/usr/bin/env node
// A protoc plugin (run by `buf generate`, proto/buf.gen.yaml): the enum ErrorCode of
// proto/dbcrate/v1/errors.proto as a plain TypeScript table with no runtime dependency, so
// libs/core (loaded by every CLI call, archive_command's included) gets the codes declared in
// the proto without loading the protobuf runtime.
import { createEcmaScriptPlugin, runNodeJs } from '@bufbuild/protoplugin';

function generateTs(schema) {
  for (const file of schema.files) {
    const codes = file.enums.find((e) => e.name === 'ErrorCode');
    if (!codes) continue;
    const f = schema.generateFile(file.name + '_codes.ts');
    f.preamble(file);
    f.print('/** The values of enum ', codes.typeName, ' by name (prefix ERROR_CODE_ removed). */');
    f.print('export const ERROR_CODE_VALUES = {');
    for (const v of codes.values) {
      const name = v.name.replace(/^ERROR_CODE_/, '');
      f.print('  ', name, ': ', v.number, ',');
    }
    f.print('} as const;');
  }
}

runNodeJs(createEcmaScriptPlugin({ name: 'protoc-gen-dbcrate-codes', version: 'v1', generateTs }));
