/**
 * Volume and snapshot names are user input that ends up in export names, URIs, file names (attach
 * state), CRs and log lines, so they are restricted to a conservative alphabet: no path
 * separators, no control characters, nothing outside ASCII, no leading dot or dash (so never
 * `.`, `..` or an option), at most 128 characters.
 *
 * Names that fail the rule still reach messages (a lookup of a name that cannot exist, an NBD
 * client asking for any export it likes): `quoteName` is how any such string is shown, so that
 * no message or log line ever carries a raw control character, terminal escape, bidirectional
 * override or a 4 KiB name.
 */
import { EngineError } from './errors.ts';

export const MAX_NAME_CHARS = 128;
const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,127}$/;

/** How much of an invalid name a message shows. */
const QUOTED_CHARS_MAX = 64;

export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name);
}

export function validateName(name: string, what = 'volume'): void {
  if (!isValidName(name)) {
    throw new EngineError(
      'INVALID_ARGUMENT',
      `invalid ${what} name ${quoteName(name)}: use 1-${MAX_NAME_CHARS} characters [a-z0-9._-], starting with a letter or digit`,
    );
  }
}

/**
 * A string in double quotes, safe for any message or log line: printable ASCII stays as it is
 * (a valid name prints exactly as typed), everything else becomes a \uXXXX escape, and only the
 * first 64 characters are shown, followed by the full length.
 */
export function quoteName(name: string): string {
  const shown = name.length > QUOTED_CHARS_MAX ? name.slice(0, QUOTED_CHARS_MAX) : name;
  let out = '"';
  for (let i = 0; i < shown.length; i++) {
    const c = shown.charCodeAt(i);
    if (c === 0x22 || c === 0x5c) out += `\\${shown[i]}`;
    else if (c >= 0x20 && c < 0x7f) out += shown[i];
    else out += `\\u${c.toString(16).padStart(4, '0')}`;
  }
  out += '"';
  return name.length > QUOTED_CHARS_MAX ? `${out}... (${name.length} characters)` : out;
}
