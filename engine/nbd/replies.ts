/**
 * Builders for transmission-phase replies (layouts in docs/internals/nbd.md). Each returns or
 * fills one Buffer that is handed to a single socket.write. The 64-bit handle is carried as two
 * 32-bit words exactly as the client sent it; we never interpret it.
 */
import assert from 'node:assert/strict';
import type { AllocationExtent } from '../block-device.ts';
import {
  BLOCK_STATUS_EXTENT_BYTES,
  BLOCK_STATUS_ID_BYTES,
  ERROR_MESSAGE_MAX_BYTES,
  ERROR_PAYLOAD_BYTES,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_NONE,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STATE_HOLE,
  NBD_STATE_ZERO,
  NBD_STRUCTURED_REPLY_MAGIC,
  SIMPLE_REPLY_BYTES,
  STRUCTURED_HEADER_BYTES,
} from './protocol.ts';
import { utf8Truncated } from './wire.ts';

/** The identity of a request that every reply repeats. */
export interface ReplyTarget {
  handleHi: number;
  handleLo: number;
}

/** Fills the 16-byte simple reply header at the start of `buf`. */
export function writeSimpleHeader(buf: Buffer, target: ReplyTarget, errno: number): void {
  buf.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  buf.writeUInt32BE(errno, 4);
  buf.writeUInt32BE(target.handleHi, 8);
  buf.writeUInt32BE(target.handleLo, 12);
}

/** Fills the 20-byte structured chunk header at the start of `buf`. */
export function writeStructuredHeader(
  buf: Buffer,
  target: ReplyTarget,
  chunk: { flags: number; type: number; payloadBytes: number },
): void {
  buf.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  buf.writeUInt16BE(chunk.flags, 4);
  buf.writeUInt16BE(chunk.type, 6);
  buf.writeUInt32BE(target.handleHi, 8);
  buf.writeUInt32BE(target.handleLo, 12);
  buf.writeUInt32BE(chunk.payloadBytes, 16);
}

export function simpleReply(target: ReplyTarget, errno: number): Buffer {
  const buf = Buffer.allocUnsafe(SIMPLE_REPLY_BYTES);
  writeSimpleHeader(buf, target, errno);
  return buf;
}

/** The empty final chunk: success with no content (a zero-length READ). */
export function structuredNone(target: ReplyTarget): Buffer {
  const buf = Buffer.allocUnsafe(STRUCTURED_HEADER_BYTES);
  writeStructuredHeader(buf, target, { flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_NONE, payloadBytes: 0 });
  return buf;
}

/** A final ERROR chunk with a short human-readable message. */
export function structuredError(target: ReplyTarget, errno: number, message: string): Buffer {
  assert.ok(errno !== 0, 'an error chunk needs a non-zero errno');
  const text = utf8Truncated(message, ERROR_MESSAGE_MAX_BYTES);
  const payloadBytes = ERROR_PAYLOAD_BYTES + text.length;
  const buf = Buffer.allocUnsafe(STRUCTURED_HEADER_BYTES + payloadBytes);
  writeStructuredHeader(buf, target, { flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_ERROR, payloadBytes });
  buf.writeUInt32BE(errno, STRUCTURED_HEADER_BYTES);
  buf.writeUInt16BE(text.length, STRUCTURED_HEADER_BYTES + 4);
  text.copy(buf, STRUCTURED_HEADER_BYTES + ERROR_PAYLOAD_BYTES);
  return buf;
}

/**
 * A final BLOCK_STATUS chunk for one context. The extents must be non-empty, each non-zero,
 * and together no longer than the request: clients hang up on anything else, so a device that
 * breaks this is a bug we refuse to pass on.
 */
export function blockStatusReply(
  target: ReplyTarget,
  contextId: number,
  extents: readonly AllocationExtent[],
  requestBytes: number,
): Buffer {
  assert.ok(extents.length > 0, 'blockStatus returned no extents');
  const payloadBytes = BLOCK_STATUS_ID_BYTES + BLOCK_STATUS_EXTENT_BYTES * extents.length;
  const buf = Buffer.allocUnsafe(STRUCTURED_HEADER_BYTES + payloadBytes);
  writeStructuredHeader(buf, target, {
    flags: NBD_REPLY_FLAG_DONE,
    type: NBD_REPLY_TYPE_BLOCK_STATUS,
    payloadBytes,
  });
  buf.writeUInt32BE(contextId, STRUCTURED_HEADER_BYTES);
  let at = STRUCTURED_HEADER_BYTES + BLOCK_STATUS_ID_BYTES;
  let coveredBytes = 0;
  for (const extent of extents) {
    assert.ok(Number.isInteger(extent.lengthBytes) && extent.lengthBytes > 0, 'empty extent');
    coveredBytes += extent.lengthBytes;
    const status = (extent.hole ? NBD_STATE_HOLE : 0) | (extent.zero ? NBD_STATE_ZERO : 0);
    buf.writeUInt32BE(extent.lengthBytes, at);
    buf.writeUInt32BE(status, at + 4);
    at += BLOCK_STATUS_EXTENT_BYTES;
  }
  assert.ok(coveredBytes <= requestBytes, 'extents cover more than was asked');
  return buf;
}
