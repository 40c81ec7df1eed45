// Plain-text tables and number formatting for the benchmark's output. The table is meant to be
// pasted into docs/benchmarks.md inside a code block, so it is aligned with spaces only.

/** A cell: text, a number (formatted by the caller) or missing. */
export type Cell = string | undefined;

export const MISSING = 'n/a';

/** Right-aligns every column but the first (numbers read best right-aligned). */
export function formatTable(headers: readonly string[], rows: ReadonlyArray<readonly Cell[]>): string {
  const cells = [headers, ...rows.map((r) => headers.map((_, i) => r[i] ?? MISSING))];
  const widths = headers.map((_, col) => Math.max(...cells.map((r) => (r[col] ?? '').length)));
  const line = (row: readonly string[]): string =>
    row
      .map((cell, col) => (col === 0 ? cell.padEnd(widths[col] ?? 0) : cell.padStart(widths[col] ?? 0)))
      .join('  ')
      .trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(cells[0] ?? []), rule, ...cells.slice(1).map(line)].join('\n');
}

/** A number with a fixed count of decimals, or n/a when it is not a finite number. */
export function fixed(value: number | undefined, decimals: number): string {
  return value === undefined || !Number.isFinite(value) ? MISSING : value.toFixed(decimals);
}

/** An integer count such as IOPS. */
export function whole(value: number | undefined): string {
  return fixed(value, 0);
}

/** numerator / denominator to 2 decimals, n/a when either side is missing or the denominator is 0. */
export function ratio(numerator: number | undefined, denominator: number | undefined): string {
  if (numerator === undefined || denominator === undefined || denominator === 0) return MISSING;
  return fixed(numerator / denominator, 2);
}
