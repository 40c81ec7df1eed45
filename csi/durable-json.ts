/**
 * Small JSON records that must survive a crash of the node plugin (attach state, staged
 * volumes): written to a temporary file, synced, renamed over the old one, and the directory
 * synced, so a record is either the old one or the new one, never a mix or missing.
 */
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';

/** Writes `value` as `dir/name` atomically, creating `dir` (mode 0700) if needed. */
export async function writeJsonDurably(dir: string, name: string, value: unknown): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, name);
  const temporary = `${path}.tmp-${process.pid}`;
  try {
    const file = await open(temporary, 'w', 0o600);
    try {
      await file.writeFile(JSON.stringify(value, null, 2) + '\n');
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(temporary, path);
  } catch (err) {
    await rm(temporary, { force: true });
    throw err;
  }
  await syncDir(dir);
}

/** Removes `dir/name`; a missing file or directory is fine. */
export async function removeDurably(dir: string, name: string): Promise<void> {
  await rm(join(dir, name), { force: true });
  await syncDir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
