import { describe, expect, it } from 'vitest';
import { fixed, formatTable, ratio, whole } from './table.ts';

describe('formatTable', () => {
  it('left-aligns the first column and right-aligns the rest', () => {
    expect(formatTable(['system', 'IOPS'], [['a', '5'], ['longer', '12345'], ['c', undefined]])).toBe(
      ['system   IOPS', '------  -----', 'a           5', 'longer  12345', 'c         n/a'].join('\n'),
    );
  });
});

describe('numbers', () => {
  it('formats ratios to 2 decimals and missing values as n/a', () => {
    expect(ratio(10, 3)).toBe('3.33');
    expect(ratio(1, 0)).toBe('n/a');
    expect(ratio(undefined, 2)).toBe('n/a');
    expect(whole(3657.6)).toBe('3658');
    expect(fixed(Number.NaN, 1)).toBe('n/a');
  });
});
