import { ErrorCode } from '@dbcrate/contracts';
import { ErrorCodes, errorCodeFromNumber, errorCodeNumber } from '@dbcrate/core';

// libs/core reads the codes from a table generated beside it (no protobuf runtime on the
// CLI's path); the messages use protobuf-es's enum. Both come from errors.proto: check they agree.
describe('error codes', () => {
  it('core’s error codes are exactly the proto enum’s, with the same numbers', () => {
    const wire = Object.entries(ErrorCode).filter(([k]) => Number.isNaN(Number(k)) && k !== 'UNSPECIFIED');
    expect(Object.keys(ErrorCodes).sort()).toEqual(wire.map(([k]) => k).sort());
    for (const [name, num] of wire) {
      const code = ErrorCodes[name as keyof typeof ErrorCodes];
      expect(errorCodeNumber(code)).toBe(num);
      expect(errorCodeFromNumber(num as number)).toBe(code);
    }
    expect(errorCodeFromNumber(0)).toBe('E_INTERNAL');
    expect(errorCodeFromNumber(9999)).toBe('E_INTERNAL');
  });
});
