import { describe, expect, it } from 'vitest';
import { CAP_SYS_RESOURCE, hasCapability, parseEffectiveCapabilities } from './node-capabilities.ts';

describe('capabilities', () => {
  it('reads CapEff from a status text', () => {
    const text = 'Name:\tnode\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n';
    const mask = parseEffectiveCapabilities(text)!;
    expect(mask).toBe(0x1fffeffffffn);
    expect((mask & (1n << BigInt(CAP_SYS_RESOURCE))) === 0n).toBe(true); // bit 24 cleared, as in this sandbox
    expect(parseEffectiveCapabilities('Name:\tx\n')).toBeUndefined();
  });

  it('answers for this process without failing', async () => {
    expect(typeof (await hasCapability(CAP_SYS_RESOURCE))).toBe('boolean');
  });
});
