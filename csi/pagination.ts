/**
 * Paging for ListVolumes and ListSnapshots. A token names the last entry of the previous page,
 * so the next page starts right after it even if that entry was deleted or new ones were
 * created in between (nothing is skipped or repeated that existed throughout). The token is
 * opaque to the CO; we make it recognisable so that a token we did not issue is refused with
 * ABORTED, the status the spec gives for an invalid starting_token.
 */
import { status } from '@grpc/grpc-js';
import { CsiError } from './status.ts';

const TOKEN_PREFIX = 'braid-page-v1:';

export interface Page<T> {
  entries: T[];
  /** '' on the last page. */
  nextToken: string;
}

/** One page of `items`, which must be sorted by `keyOf` in ascending code-unit order. */
export function paginate<T>(items: readonly T[], keyOf: (item: T) => string, maxEntries: number, startingToken: string): Page<T> {
  if (!Number.isInteger(maxEntries) || maxEntries < 0) {
    throw new CsiError(status.INVALID_ARGUMENT, `max_entries must not be negative (got ${maxEntries})`);
  }
  const after = startingToken === '' ? undefined : decodeToken(startingToken);
  const rest = after === undefined ? items : items.filter((item) => keyOf(item) > after);
  if (maxEntries === 0 || rest.length <= maxEntries) return { entries: [...rest], nextToken: '' };
  const entries = rest.slice(0, maxEntries);
  const last = entries[entries.length - 1];
  return { entries, nextToken: last === undefined ? '' : encodeToken(keyOf(last)) };
}

export function encodeToken(lastKey: string): string {
  return Buffer.from(TOKEN_PREFIX + lastKey, 'utf8').toString('base64url');
}

function decodeToken(token: string): string {
  const text = /^[A-Za-z0-9_-]+$/.test(token) ? Buffer.from(token, 'base64url').toString('utf8') : '';
  if (!text.startsWith(TOKEN_PREFIX)) {
    throw new CsiError(status.ABORTED, `starting_token ${JSON.stringify(token)} was not issued by this plugin`);
  }
  return text.slice(TOKEN_PREFIX.length);
}

/** Ascending code-unit order, the order paginate() expects. */
export function byKey<T>(keyOf: (item: T) => string): (a: T, b: T) => number {
  return (a, b) => {
    const ka = keyOf(a);
    const kb = keyOf(b);
    return ka < kb ? -1 : ka > kb ? 1 : 0;
  };
}
