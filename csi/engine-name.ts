/**
 * CSI names (CreateVolume / CreateSnapshot `name`) are any Unicode up to 128 bytes; engine names
 * are `[a-z0-9][a-z0-9._-]{0,127}`. This module maps the first onto the second,
 * deterministically, so that a retried CreateVolume finds the volume its first attempt made.
 *
 * - A CSI name that is already a valid engine name is used as is (Kubernetes' `pvc-<uid>`), so
 *   volumes keep readable names in `braid volume ls`.
 * - Any other name becomes a readable prefix (lowercased, invalid runs replaced by '-') plus '.'
 *   and 16 hex digits of its SHA-256.
 * - A valid name that already ends like a hashed one ('.' + 16 hex digits) is hashed too, so a
 *   verbatim name can never equal another name's hashed form: the mapping is one-to-one up to
 *   64-bit hash collisions.
 */
import { createHash } from 'node:crypto';
import { isValidName } from '../engine/names.ts';

const HASH_HEX_DIGITS = 16;
const MAX_ENGINE_NAME_CHARS = 128;
const HASHED_FORM = new RegExp(`\\.[0-9a-f]{${HASH_HEX_DIGITS}}$`);

export function engineNameFor(csiName: string): string {
  if (isValidName(csiName) && !HASHED_FORM.test(csiName)) return csiName;
  const hash = createHash('sha256').update(csiName, 'utf8').digest('hex').slice(0, HASH_HEX_DIGITS);
  const room = MAX_ENGINE_NAME_CHARS - HASH_HEX_DIGITS - 1;
  const prefix = readablePrefix(csiName).slice(0, room) || 'v';
  return `${prefix}.${hash}`;
}

/** Lowercase, runs of invalid characters as '-', starting with a letter or digit. */
function readablePrefix(name: string): string {
  return name
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '');
}
