/**
 * The engine's only door to persistent storage. Everything the engine keeps on disk goes
 * through these two interfaces, so tests can substitute a simulated disk that loses unsynced
 * writes, tears them, or fails on demand (engine/storage/memory-storage.ts).
 *
 * Names are plain file names inside the pool directory (no separators): the pool is one flat
 * directory, so one directory fsync makes every create, rename and remove durable.
 */

export interface StorageFile {
  /** Reads up to `length` bytes at `position` into buf[bufOffset..]; returns bytes read (short at EOF). */
  read(buf: Buffer, bufOffset: number, length: number, position: number): Promise<number>;
  /** Writes exactly `length` bytes; a short write is an error. */
  write(buf: Buffer, bufOffset: number, length: number, position: number): Promise<void>;
  /** Makes every completed write to this file durable (fdatasync). */
  datasync(): Promise<void>;
  truncate(lengthBytes: number): Promise<void>;
  sizeBytes(): Promise<number>;
  close(): Promise<void>;
}

export interface Storage {
  /** Opens a file for reading and writing; with `create`, creates it if missing. */
  open(name: string, opts: { create: boolean }): Promise<StorageFile>;
  list(): Promise<string[]>;
  exists(name: string): Promise<boolean>;
  remove(name: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  /** Makes creates, renames and removes in the directory durable. */
  syncDir(): Promise<void>;
  /** Reads a whole (small) file; undefined if it does not exist. */
  readFile(name: string): Promise<Buffer | undefined>;
}

/**
 * Writes a small file atomically and durably: temporary file, fdatasync, rename, directory
 * fsync. After a crash the file has either its old or its new content, never a mix.
 */
export async function writeFileAtomic(storage: Storage, name: string, data: Buffer): Promise<void> {
  const tmp = `${name}.tmp`;
  const file = await storage.open(tmp, { create: true });
  try {
    await file.truncate(0);
    await file.write(data, 0, data.length, 0);
    await file.datasync();
  } finally {
    await file.close();
  }
  await storage.rename(tmp, name);
  await storage.syncDir();
}
