/**
 * The size an export has now, asked of the engine over NBD (`nbdinfo --size`, from libnbd-bin
 * like nbdfuse). Attached devices keep the size they saw at connect, so this is how `refresh`
 * learns that a volume grew.
 */
import { AttachError } from './errors.ts';
import type { Exec } from './exec.ts';

export async function exportSizeBytes(uri: string, exec: Exec): Promise<number> {
  let stdout: string;
  try {
    ({ stdout } = await exec('nbdinfo', ['--size', uri]));
  } catch (err) {
    throw new AttachError('ATTACH_FAILED', `cannot read the size of ${uri}`, { cause: err });
  }
  const text = stdout.trim();
  const sizeBytes = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(sizeBytes)) {
    throw new AttachError('ATTACH_FAILED', `nbdinfo --size ${uri} printed ${JSON.stringify(text)}`);
  }
  return sizeBytes;
}
