/**
 * Small big-endian helpers shared by the handshake and the transmission phase. 64-bit fields are
 * written as two 32-bit halves from a safe integer, so no BigInt is created per request.
 */
import assert from 'node:assert/strict';

const TWO_POW_32 = 0x1_0000_0000;

/** Writes a non-negative safe integer as an unsigned 64-bit big-endian field at `at`. */
export function writeUInt64(buf: Buffer, value: number, at: number): void {
  assert.ok(Number.isSafeInteger(value) && value >= 0, 'u64 field must be a safe integer');
  buf.writeUInt32BE(Math.floor(value / TWO_POW_32), at);
  buf.writeUInt32BE(value >>> 0, at + 4);
}

/** Encodes a string as UTF-8, cut at a character boundary to at most `maxBytes`. */
export function utf8Truncated(text: string, maxBytes: number): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return bytes;
  let end = maxBytes;
  // Step back over continuation bytes (10xxxxxx) so we never split a character.
  while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end);
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Decodes an NBD string (export name, query): valid UTF-8, no NUL, at most `maxBytes`.
 * Returns null when the bytes are not such a string.
 */
export function decodeNbdString(bytes: Uint8Array, maxBytes: number): string | null {
  if (bytes.length > maxBytes || bytes.includes(0)) return null;
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return null;
  }
}
