/**
 * Volume and snapshot names are user input that ends up in export names, URIs, CRs and log
 * lines, so they are restricted to a conservative alphabet: no path separators, no control
 * characters, no leading dot or dash.
 */
import { EngineError } from './errors.ts';

const NAME_PATTERN = /^[a-z0-9][a-z0-9._-]{0,127}$/;

export function isValidName(name: string): boolean {
  return NAME_PATTERN.test(name);
}

export function validateName(name: string, what = 'volume'): void {
  if (!isValidName(name)) {
    throw new EngineError(
      'INVALID_ARGUMENT',
      `invalid ${what} name ${JSON.stringify(name)}: use 1-128 characters [a-z0-9._-], starting with a letter or digit`,
    );
  }
}
