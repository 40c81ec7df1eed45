/**
 * Parsing and printing of byte sizes as users type them: plain bytes or a binary suffix
 * (K, M, G, T; optional trailing "i"/"iB"/"B"), e.g. 512M, 4G, 1T.
 */

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 };

/** Returns the size in bytes, or undefined when the text is not a size. */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+)\s*([KMGTP]?)(?:i?B)?\s*$/i.exec(text);
  if (!m) return undefined;
  const digits = m[1] as string;
  const unit = UNITS[(m[2] as string).toUpperCase()];
  if (unit === undefined) return undefined;
  const bytes = Number(digits) * unit;
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  const digits = i === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${units[i]}`;
}
