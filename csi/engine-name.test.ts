import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isValidName } from '../engine/names.ts';
import { HOSTILE_NAMES } from '../test/lib/hostile-names.ts';
import { engineNameFor } from './engine-name.ts';

describe('engineNameFor', () => {
  it('keeps a name that is already a valid engine name', () => {
    expect(engineNameFor('pvc-0f6c0bd4-5c8e-4a5e-9a43-2e7c0e1a77c1')).toBe('pvc-0f6c0bd4-5c8e-4a5e-9a43-2e7c0e1a77c1');
  });

  it('maps any other name to a readable prefix and a hash', () => {
    expect(engineNameFor('My Volume/1')).toMatch(/^my-volume-1\.[0-9a-f]{16}$/);
    expect(engineNameFor('-x')).toMatch(/^x\.[0-9a-f]{16}$/);
    expect(engineNameFor('日本')).toMatch(/^v\.[0-9a-f]{16}$/);
    expect(engineNameFor('a'.repeat(300))).toHaveLength(128);
  });

  it('hashes a valid name that looks hashed, so no verbatim name equals a hashed one', () => {
    const hashed = engineNameFor('My Volume');
    expect(engineNameFor(hashed)).not.toBe(hashed);
  });

  it('is deterministic, valid and one-to-one', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 200 }), fc.string({ minLength: 1, maxLength: 200 }), (a, b) => {
        const na = engineNameFor(a);
        expect(isValidName(na)).toBe(true);
        expect(engineNameFor(a)).toBe(na);
        if (a !== b) expect(engineNameFor(b)).not.toBe(na);
      }),
    );
  });
});

describe('engineNameFor on hostile CSI names', () => {
  it('turns traversal, separators, NUL, newlines, escapes, unicode and long names into distinct valid engine names', () => {
    const seen = new Map<string, string>();
    for (const csiName of HOSTILE_NAMES) {
      const name = engineNameFor(csiName);
      expect(isValidName(name), JSON.stringify(csiName)).toBe(true);
      expect(name).not.toMatch(/[/\\\0-\x1f]|^\.|^-/);
      expect(seen.get(name), `${JSON.stringify(csiName)} and ${JSON.stringify(seen.get(name))} collide`).toBeUndefined();
      seen.set(name, csiName);
    }
    expect(engineNameFor('../etc/passwd')).toMatch(/^etc-passwd\.[0-9a-f]{16}$/);
    expect(engineNameFor('..')).toMatch(/^v\.[0-9a-f]{16}$/);
    expect(engineNameFor('nul\0byte')).toMatch(/^nul-byte\.[0-9a-f]{16}$/);
    expect(engineNameFor('x'.repeat(5000)).length).toBeLessThanOrEqual(128);
  });
});
