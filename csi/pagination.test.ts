import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { encodeToken, paginate } from './pagination.ts';
import { CsiError } from './status.ts';

const id = (s: string) => s;
const items = ['a', 'b', 'c', 'd', 'e'];

describe('paginate', () => {
  it('returns everything without max_entries', () => {
    expect(paginate(items, id, 0, '')).toEqual({ entries: items, nextToken: '' });
  });

  it('walks pages with tokens and ends with an empty token', () => {
    const seen: string[] = [];
    let token = '';
    do {
      const page = paginate(items, id, 2, token);
      expect(page.entries.length).toBeLessThanOrEqual(2);
      seen.push(...page.entries);
      token = page.nextToken;
    } while (token !== '');
    expect(seen).toEqual(items);
  });

  it('continues after a deleted entry', () => {
    const first = paginate(items, id, 2, '');
    expect(paginate(['a', 'c', 'd', 'e'], id, 2, first.nextToken).entries).toEqual(['c', 'd']);
  });

  it('refuses a token it did not issue with ABORTED, and a negative max_entries', () => {
    for (const token of ['invalid-token', '!!', encodeToken('x').slice(3), Buffer.from('other:x').toString('base64url')]) {
      expect(() => paginate(items, id, 1, token)).toThrow(expect.objectContaining({ code: status.ABORTED }));
    }
    expect(() => paginate(items, id, -1, '')).toThrow(CsiError);
  });
});
