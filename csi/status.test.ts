import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { EngineError, type EngineErrorCode } from '../engine/errors.ts';
import { CsiError, toCsiStatus } from './status.ts';

describe('toCsiStatus', () => {
  const table: [EngineErrorCode, status, boolean][] = [
    ['INVALID_ARGUMENT', status.INVALID_ARGUMENT, false],
    ['NOT_FOUND', status.NOT_FOUND, false],
    ['ALREADY_EXISTS', status.ALREADY_EXISTS, false],
    ['OUT_OF_RANGE', status.OUT_OF_RANGE, false],
    ['NO_SPACE', status.RESOURCE_EXHAUSTED, false],
    ['BUSY', status.FAILED_PRECONDITION, false],
    ['READ_ONLY', status.FAILED_PRECONDITION, false],
    ['FAILED_PRECONDITION', status.FAILED_PRECONDITION, false],
    ['UNSUPPORTED_FORMAT', status.FAILED_PRECONDITION, false],
    ['IO_ERROR', status.INTERNAL, true],
    ['CORRUPTION', status.DATA_LOSS, false],
  ];

  it.each(table)('maps engine code %s to %s', (engineCode, csiCode, internal) => {
    const result = toCsiStatus(new EngineError(engineCode, 'the engine said so'));
    expect(result.error.code).toBe(csiCode);
    expect(result.error.details).toBe('the engine said so');
    expect(result.internal).toBe(internal);
  });

  it('passes a CsiError through unchanged', () => {
    const result = toCsiStatus(new CsiError(status.ABORTED, 'busy here'));
    expect(result).toMatchObject({ error: { code: status.ABORTED, details: 'busy here' }, internal: false });
  });

  it('turns anything else into INTERNAL, marked for loud logging', () => {
    for (const err of [new Error('boom'), new TypeError('x is undefined'), 'a string', Object.assign(new Error('enoent'), { code: 'ENOENT' })]) {
      const result = toCsiStatus(err);
      expect(result.error.code).toBe(status.INTERNAL);
      expect(result.internal).toBe(true);
    }
  });

  it('never looks at message text', () => {
    expect(toCsiStatus(new Error('not found')).error.code).toBe(status.INTERNAL);
    expect(toCsiStatus(new EngineError('BUSY', 'volume not found')).error.code).toBe(status.FAILED_PRECONDITION);
  });
});
