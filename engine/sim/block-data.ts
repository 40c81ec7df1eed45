/**
 * Data the simulation writes. Every write gets content no other write has (a window of a
 * fixed random buffer, stamped with the write's id every 512 bytes), so a block read back can
 * be matched to the one write it came from: another volume's data, a stale version or damaged
 * bytes can never pass for the expected value by accident.
 */
import { SimRandom } from '../storage/sim-disk-prng.ts';

export const BLOCK_BYTES = 4096;
export const ZERO_BLOCK: Buffer = Buffer.alloc(BLOCK_BYTES);

const SOURCE_BYTES = 1 << 20;
const SOURCE = new SimRandom(0x5eed_b1d).fill(Buffer.allocUnsafe(SOURCE_BYTES));
const STAMP_EVERY = 512;

/** The bytes of one write, a pure function of its id and length. */
export function writeData(writeId: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let from = new SimRandom(writeId).int(SOURCE_BYTES);
  for (let at = 0; at < length; ) {
    const n = Math.min(length - at, SOURCE_BYTES - from);
    SOURCE.copy(out, at, from, from + n);
    at += n;
    from = 0;
  }
  for (let at = 0; at + 4 <= length; at += STAMP_EVERY) out.writeUInt32LE(writeId >>> 0, at);
  return out;
}
