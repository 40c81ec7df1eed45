import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EngineError } from './errors.ts';
import { HOSTILE_NAMES } from '../test/lib/hostile-names.ts';
import { isValidName, quoteName, validateName } from './names.ts';


describe('isValidName', () => {
  it('accepts the documented alphabet up to 128 characters', () => {
    for (const ok of ['a', '0', 'vm1', 'pvc-0f6c0bd4', 'a.b_c-d', 'a..b', 'a'.repeat(128), '9'.repeat(128)]) expect(isValidName(ok), ok).toBe(true);
  });

  it('refuses traversal, separators, control characters, unicode and long names', () => {
    for (const bad of HOSTILE_NAMES) expect(isValidName(bad), JSON.stringify(bad)).toBe(false);
  });

  it('never accepts a name that could leave a directory or carry a control character', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => {
        if (!isValidName(s)) return;
        expect(s).not.toMatch(/[/\\\0-\x1f\x7f-\uffff]/);
        expect(s === '.' || s === '..' || s.startsWith('.') || s.startsWith('-')).toBe(false);
        expect(s.length).toBeLessThanOrEqual(128);
      }),
    );
  });
});

describe('quoteName', () => {
  it('shows a valid name exactly as typed', () => {
    expect(quoteName('vm1')).toBe('"vm1"');
  });

  it('escapes everything outside printable ASCII and cuts long names', () => {
    expect(quoteName('new\nline')).toBe('"new\\u000aline"');
    expect(quoteName('nul\0')).toBe('"nul\\u0000"');
    expect(quoteName('esc\u001b[31m')).toBe('"esc\\u001b[31m"');
    expect(quoteName('bidi\u202e')).toBe('"bidi\\u202e"');
    expect(quoteName('q"\\')).toBe('"q\\"\\\\"');
    expect(quoteName('x'.repeat(5000))).toBe(`"${'x'.repeat(64)}"... (5000 characters)`);
  });

  it('never lets a control or non-ASCII character through, whatever the input', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (s) => {
        const q = quoteName(s);
        expect(q).toMatch(/^[\x20-\x7e]*$/);
        expect(q.length).toBeLessThanOrEqual(2 + 64 * 6 + 40);
      }),
    );
  });
});

describe('validateName', () => {
  it('throws INVALID_ARGUMENT with a message that is safe to print', () => {
    for (const bad of HOSTILE_NAMES) {
      let caught: unknown;
      try {
        validateName(bad, 'snapshot');
      } catch (err) {
        caught = err;
      }
      expect(caught, JSON.stringify(bad)).toBeInstanceOf(EngineError);
      expect((caught as EngineError).code).toBe('INVALID_ARGUMENT');
      expect((caught as EngineError).message).toMatch(/^invalid snapshot name "[\x20-\x7e]*$/);
    }
  });
});
