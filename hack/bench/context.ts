// What every benchmark command gets: where the repository is, its own scratch directory, and
// how to report progress. Progress goes to stderr so that stdout holds only what is meant to be
// pasted into docs/benchmarks.md: the machine description, the table and the final line.

import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { onCleanup, removeTree, syncDisks } from './proc.ts';
import type { PerFileCache, SystemKind } from './systems.ts';

export interface BenchContext {
  repoDir: string;
  /** A fresh directory for this run only; removed at exit unless keep is set. */
  scratchDir: string;
  systems: readonly SystemKind[];
  perFileCache: PerFileCache;
}

export function progress(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

/**
 * Makes the run's scratch directory inside `parent` (default: the repository's .bench/, which
 * is gitignored). A fresh subdirectory, never the given directory itself, so removing it at the
 * end can never delete anything the user had there.
 */
export function makeScratchDir(repoDir: string, command: string, parent: string | undefined, keep: boolean): string {
  const base = resolve(parent ?? join(repoDir, '.bench'));
  mkdirSync(base, { recursive: true });
  const dir = mkdtempSync(join(base, `${command}-`));
  onCleanup(() => {
    if (keep) process.stderr.write(`bench: kept scratch directory ${dir}\n`);
    else removeTree(dir);
  });
  return dir;
}

/**
 * Writes back all dirty pages and empties the page cache, so a read benchmark starts cold and
 * each system starts from the same state. Dropping needs root; without it we say so and go on.
 */
export async function dropCaches(): Promise<boolean> {
  await syncDisks();
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch (error) {
    progress(`could not drop the page cache (${(error as NodeJS.ErrnoException).code ?? String(error)}); reads may be warm`);
    return false;
  }
}
