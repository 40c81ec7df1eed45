import { describe, expect, it } from 'vitest';
import { REDACTED, redact } from './redact.ts';

describe('redact', () => {
  it('strips secrets and mount flags at any depth, keeping empty ones visible', () => {
    const request = {
      name: 'v',
      secrets: { password: 'hunter2' },
      volumeCapabilities: [{ mount: { fsType: 'ext4', mountFlags: ['user=bob,pass=x'] } }],
      nested: { secrets: {} },
    };
    const copy = redact(request);
    expect(copy).toEqual({
      name: 'v',
      secrets: REDACTED,
      volumeCapabilities: [{ mount: { fsType: 'ext4', mountFlags: REDACTED } }],
      nested: { secrets: {} },
    });
    expect(JSON.stringify(copy)).not.toContain('hunter2');
    expect(request.secrets.password).toBe('hunter2');
  });
});
