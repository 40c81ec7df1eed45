import { Metadata, status } from '@grpc/grpc-js';
import type { ServiceError } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { EngineError } from '../errors.ts';
import type { EngineErrorCode } from '../errors.ts';
import { ERROR_CODE_METADATA_KEY, EngineApiError, fromServiceError, grpcStatusOf, toStatusError } from './status.ts';

const ALL_CODES: EngineErrorCode[] = [
  'INVALID_ARGUMENT',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'OUT_OF_RANGE',
  'NO_SPACE',
  'READ_ONLY',
  'BUSY',
  'FAILED_PRECONDITION',
  'IO_ERROR',
  'CORRUPTION',
  'UNSUPPORTED_FORMAT',
];

function serviceError(code: status, details: string, metadata = new Metadata()): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata });
}

describe('status mapping', () => {
  it('maps engine codes to the documented gRPC codes', () => {
    expect(grpcStatusOf('NO_SPACE')).toBe(status.RESOURCE_EXHAUSTED);
    expect(grpcStatusOf('BUSY')).toBe(status.FAILED_PRECONDITION);
    expect(grpcStatusOf('READ_ONLY')).toBe(status.FAILED_PRECONDITION);
    expect(grpcStatusOf('IO_ERROR')).toBe(status.INTERNAL);
    expect(grpcStatusOf('CORRUPTION')).toBe(status.DATA_LOSS);
  });

  it('round-trips every engine code through status and metadata', () => {
    for (const code of ALL_CODES) {
      const { error, internal } = toStatusError(new EngineError(code, `msg ${code}`));
      expect(internal).toBe(false);
      const back = fromServiceError(serviceError(error.code as status, error.details as string, error.metadata));
      expect(back).toBeInstanceOf(EngineError);
      expect(back).toMatchObject({ code, message: `msg ${code}` });
    }
  });

  it('maps unambiguous gRPC codes back without metadata', () => {
    expect(fromServiceError(serviceError(status.NOT_FOUND, 'x'))).toMatchObject({ code: 'NOT_FOUND' });
    expect(fromServiceError(serviceError(status.RESOURCE_EXHAUSTED, 'x'))).toMatchObject({ code: 'NO_SPACE' });
  });

  it('ignores an unknown engine code in metadata', () => {
    const metadata = new Metadata();
    metadata.set(ERROR_CODE_METADATA_KEY, 'NOT_A_CODE');
    expect(fromServiceError(serviceError(status.ALREADY_EXISTS, 'x', metadata))).toMatchObject({ code: 'ALREADY_EXISTS' });
  });

  it('keeps statuses without engine meaning apart from EngineError', () => {
    const err = fromServiceError(serviceError(status.DEADLINE_EXCEEDED, 'Deadline exceeded'));
    expect(err).toBeInstanceOf(EngineApiError);
    expect(err.message).toBe('the engine did not answer in time');
    expect(fromServiceError(serviceError(status.UNIMPLEMENTED, 'nope'))).toBeInstanceOf(EngineApiError);
  });

  it('turns anything but an EngineError into INTERNAL', () => {
    const { error, internal } = toStatusError(new RangeError('bad'));
    expect(internal).toBe(true);
    expect(error.code).toBe(status.INTERNAL);
    expect(error.metadata).toBeUndefined();
  });
});
