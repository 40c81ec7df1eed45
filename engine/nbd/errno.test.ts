import { describe, expect, it } from 'vitest';
import { EngineError } from '../errors.ts';
import type { EngineErrorCode } from '../errors.ts';
import { nbdErrnoFor, optionErrorFor } from './errno.ts';
import { NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_EPERM, NBD_REP_ERR_POLICY, NBD_REP_ERR_UNKNOWN } from './protocol.ts';
import { recordingLogger } from './test-support.ts';

describe('nbdErrnoFor', () => {
  const expected: Record<EngineErrorCode, number> = {
    INVALID_ARGUMENT: NBD_EINVAL,
    OUT_OF_RANGE: NBD_EINVAL,
    ALREADY_EXISTS: NBD_EINVAL,
    FAILED_PRECONDITION: NBD_EINVAL,
    NO_SPACE: NBD_ENOSPC,
    READ_ONLY: NBD_EPERM,
    NOT_FOUND: NBD_EIO,
    BUSY: NBD_EIO,
    IO_ERROR: NBD_EIO,
    CORRUPTION: NBD_EIO,
    UNSUPPORTED_FORMAT: NBD_EIO,
  };

  for (const [code, errno] of Object.entries(expected)) {
    it(`maps ${code} to ${errno} without logging`, () => {
      const logger = recordingLogger();
      expect(nbdErrnoFor(new EngineError(code as EngineErrorCode, 'x'), logger)).toBe(errno);
      expect(logger.records).toEqual([]);
    });
  }

  it('maps anything else to EIO and logs it as an error', () => {
    const logger = recordingLogger();
    expect(nbdErrnoFor(new RangeError('bug'), logger)).toBe(NBD_EIO);
    expect(logger.records.map((r) => r.level)).toEqual(['error']);
  });
});

describe('optionErrorFor', () => {
  it('reports a missing export as unknown and other failures as policy', () => {
    const logger = recordingLogger();
    expect(optionErrorFor(new EngineError('NOT_FOUND', 'x'), logger)).toBe(NBD_REP_ERR_UNKNOWN);
    expect(optionErrorFor(new EngineError('IO_ERROR', 'x'), logger)).toBe(NBD_REP_ERR_POLICY);
    expect(optionErrorFor(new Error('bug'), logger)).toBe(NBD_REP_ERR_POLICY);
    expect(logger.records.map((r) => r.level)).toEqual(['error']);
  });
});
