import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { AttachError } from './attach/errors.ts';
import { MountError } from './mount/errors.ts';
import { nodeError } from './node-errors.ts';
import { CsiError } from './status.ts';

describe('nodeError', () => {
  it.each([
    [new AttachError('DEVICE_BUSY', 'busy'), status.FAILED_PRECONDITION],
    [new AttachError('ONLINE_RESIZE_UNSUPPORTED', 'in use'), status.FAILED_PRECONDITION],
    [new AttachError('NOT_SUPPORTED', 'no nbdfuse'), status.FAILED_PRECONDITION],
    [new AttachError('NO_FREE_DEVICE', 'full'), status.RESOURCE_EXHAUSTED],
    [new MountError('MOUNT_CONFLICT', 'other'), status.ALREADY_EXISTS],
    [new MountError('FS_MISMATCH', 'xfs'), status.FAILED_PRECONDITION],
    [new MountError('UNKNOWN_CONTENT', 'gpt'), status.FAILED_PRECONDITION],
    [new MountError('INVALID_ARGUMENT', 'relative'), status.INVALID_ARGUMENT],
  ])('maps %s by its code', (err, code) => {
    const mapped = nodeError(err);
    expect(mapped).toBeInstanceOf(CsiError);
    expect(mapped).toMatchObject({ code, message: err.message, cause: err });
  });

  it('leaves real failures alone, so the server reports them as INTERNAL with their stack', () => {
    for (const err of [new AttachError('ATTACH_FAILED', 'x'), new AttachError('STATE_CORRUPT', 'x'), new MountError('MOUNT_FAILED', 'x'), new Error('bug')]) {
      expect(nodeError(err)).toBe(err);
    }
  });
});
