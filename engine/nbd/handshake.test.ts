import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  NBD_CMD_FLUSH,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FAST_ZERO,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
} from './protocol.ts';
import {
  greet,
  infoRequest,
  metaContextRequest,
  option,
  RawClient,
  readOptionReplies,
  readOptionReply,
  readSimpleReply,
  request,
  startTestServer,
} from './test-support.ts';
import type { OptionReply, TestServer } from './test-support.ts';

const VOLUME_BYTES = 8 * 1024 * 1024;
const ALL_FLAGS =
  NBD_FLAG_HAS_FLAGS |
  NBD_FLAG_SEND_FLUSH |
  NBD_FLAG_SEND_FUA |
  NBD_FLAG_SEND_TRIM |
  NBD_FLAG_SEND_WRITE_ZEROES |
  NBD_FLAG_SEND_FAST_ZERO |
  NBD_FLAG_CAN_MULTI_CONN;

let t: TestServer;

beforeEach(async () => {
  t = await startTestServer((exports) => {
    exports.create('vol', VOLUME_BYTES);
    exports.create('snap', 4096, { readOnly: true });
  });
});

afterEach(async () => {
  await t.stop();
  expect(t.exports.openHandles).toBe(0);
});

async function negotiating(): Promise<RawClient> {
  const client = await RawClient.connect(t.socketPath);
  await greet(client);
  return client;
}

function infoItems(replies: OptionReply[]): Map<number, Buffer> {
  const items = new Map<number, Buffer>();
  for (const reply of replies) if (reply.type === NBD_REP_INFO) items.set(reply.data.readUInt16BE(0), reply.data);
  return items;
}

describe('greeting', () => {
  it('offers fixed newstyle and no-zeroes', async () => {
    const client = await RawClient.connect(t.socketPath);
    const greeting = await client.read(18);
    expect(greeting.subarray(0, 16).toString('latin1')).toBe('NBDMAGICIHAVEOPT');
    expect(greeting.readUInt16BE(16)).toBe(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    client.destroy();
  });

  it('closes the connection on unknown client flags', async () => {
    const client = await RawClient.connect(t.socketPath);
    await greet(client, NBD_FLAG_C_FIXED_NEWSTYLE | 0x100);
    expect(await client.endsWithoutMoreData()).toBe(true);
  });
});

describe('NBD_OPT_GO', () => {
  it('describes the export and enters transmission', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_GO, infoRequest('vol', [NBD_INFO_BLOCK_SIZE])));
    const replies = await readOptionReplies(client);
    expect(replies.at(-1)?.type).toBe(NBD_REP_ACK);
    const items = infoItems(replies);
    const exportInfo = items.get(NBD_INFO_EXPORT);
    expect(Number(exportInfo?.readBigUInt64BE(2))).toBe(VOLUME_BYTES);
    expect(exportInfo?.readUInt16BE(10)).toBe(ALL_FLAGS);
    const blockSize = items.get(NBD_INFO_BLOCK_SIZE);
    expect([blockSize?.readUInt32BE(2), blockSize?.readUInt32BE(6), blockSize?.readUInt32BE(10)]).toEqual([
      1,
      4096,
      32 * 1024 * 1024,
    ]);
    await vi.waitFor(() => expect(t.exports.openHandles).toBe(1));
    client.destroy();
    await vi.waitFor(() => expect(t.exports.openHandles).toBe(0));
  });

  it('always sends the block size, even unasked', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_GO, infoRequest('vol')));
    expect(infoItems(await readOptionReplies(client)).has(NBD_INFO_BLOCK_SIZE)).toBe(true);
    client.destroy();
  });

  it('sends name and description when asked', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_GO, infoRequest('vol', [NBD_INFO_NAME, NBD_INFO_DESCRIPTION])));
    const items = infoItems(await readOptionReplies(client));
    expect(items.get(NBD_INFO_NAME)?.subarray(2).toString()).toBe('vol');
    expect(items.get(NBD_INFO_DESCRIPTION)?.length).toBeGreaterThan(2);
    client.destroy();
  });

  it('marks a read-only export', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_GO, infoRequest('snap')));
    const exportInfo = infoItems(await readOptionReplies(client)).get(NBD_INFO_EXPORT);
    expect(exportInfo?.readUInt16BE(10)).toBe(ALL_FLAGS | NBD_FLAG_READ_ONLY);
    client.destroy();
  });

  it('answers ERR_UNKNOWN for an unknown export and stays in negotiation', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_GO, infoRequest('nope')));
    expect(await readOptionReply(client)).toMatchObject({ option: NBD_OPT_GO, type: NBD_REP_ERR_UNKNOWN });
    client.write(option(NBD_OPT_GO, infoRequest('vol')));
    expect((await readOptionReplies(client)).at(-1)?.type).toBe(NBD_REP_ACK);
    client.destroy();
  });

  it('answers ERR_INVALID for malformed data', async () => {
    const client = await negotiating();
    const data = infoRequest('vol');
    data.writeUInt32BE(1000, 0); // name length beyond the data
    client.write(option(NBD_OPT_GO, data));
    expect((await readOptionReply(client)).type).toBe(NBD_REP_ERR_INVALID);
    client.destroy();
  });
});

describe('NBD_OPT_INFO', () => {
  it('answers ERR_UNKNOWN for an unknown export', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_INFO, infoRequest('missing')));
    expect(await readOptionReply(client)).toMatchObject({ option: NBD_OPT_INFO, type: NBD_REP_ERR_UNKNOWN });
    client.destroy();
  });

  it('describes an export without keeping it open', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_INFO, infoRequest('vol')));
    const replies = await readOptionReplies(client);
    expect(replies.at(-1)?.type).toBe(NBD_REP_ACK);
    expect(infoItems(replies).has(NBD_INFO_EXPORT)).toBe(true);
    expect(t.exports.openHandles).toBe(0);
    client.destroy();
  });
});

describe('NBD_OPT_EXPORT_NAME', () => {
  it('replies with size and flags, without padding when NO_ZEROES was agreed', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_EXPORT_NAME, Buffer.from('vol')));
    const reply = await client.read(10);
    expect(Number(reply.readBigUInt64BE(0))).toBe(VOLUME_BYTES);
    expect(reply.readUInt16BE(8)).toBe(ALL_FLAGS);
    // The next bytes must already be the reply to our first request: no padding in between.
    client.write(request({ type: NBD_CMD_FLUSH, handle: 3n }));
    expect(await readSimpleReply(client)).toEqual({ errno: 0, handle: 3n });
    client.destroy();
  });

  it('pads with 124 zeroes for a client that did not agree to NO_ZEROES', async () => {
    const client = await RawClient.connect(t.socketPath);
    await greet(client, NBD_FLAG_C_FIXED_NEWSTYLE);
    client.write(option(NBD_OPT_EXPORT_NAME, Buffer.from('vol')));
    const reply = await client.read(10 + 124);
    expect(reply.subarray(10).every((b) => b === 0)).toBe(true);
    client.destroy();
  });

  it('closes the connection for an unknown export, having no way to say why', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_EXPORT_NAME, Buffer.from('nope')));
    expect(await client.endsWithoutMoreData()).toBe(true);
  });
});

describe('other options', () => {
  it('lists every export', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_LIST));
    const replies = await readOptionReplies(client);
    expect(replies.at(-1)?.type).toBe(NBD_REP_ACK);
    const names = replies
      .filter((r) => r.type === NBD_REP_SERVER)
      .map((r) => r.data.subarray(4, 4 + r.data.readUInt32BE(0)).toString());
    expect(names.sort()).toEqual(['snap', 'vol']);
    client.destroy();
  });

  it('answers ERR_INVALID to LIST with data', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_LIST, Buffer.from('x')));
    expect((await readOptionReply(client)).type).toBe(NBD_REP_ERR_INVALID);
    client.destroy();
  });

  it('answers ERR_UNSUP to an unknown option and carries on', async () => {
    const client = await negotiating();
    client.write(option(4242, Buffer.from('whatever')));
    expect(await readOptionReply(client)).toMatchObject({ option: 4242, type: NBD_REP_ERR_UNSUP });
    client.write(option(NBD_OPT_LIST));
    expect((await readOptionReplies(client)).at(-1)?.type).toBe(NBD_REP_ACK);
    client.destroy();
  });

  it('refuses STARTTLS by policy', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_STARTTLS));
    expect((await readOptionReply(client)).type).toBe(NBD_REP_ERR_POLICY);
    client.destroy();
  });

  it('acknowledges ABORT, then closes', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_ABORT));
    expect((await readOptionReply(client)).type).toBe(NBD_REP_ACK);
    expect(await client.endsWithoutMoreData()).toBe(true);
  });

  it('answers ERR_INVALID to STRUCTURED_REPLY with data', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_STRUCTURED_REPLY, Buffer.from([1])));
    expect((await readOptionReply(client)).type).toBe(NBD_REP_ERR_INVALID);
    client.destroy();
  });
});

describe('meta contexts', () => {
  async function structured(): Promise<RawClient> {
    const client = await negotiating();
    client.write(option(NBD_OPT_STRUCTURED_REPLY));
    expect((await readOptionReply(client)).type).toBe(NBD_REP_ACK);
    return client;
  }

  function contextNames(replies: OptionReply[]): string[] {
    return replies.filter((r) => r.type === NBD_REP_META_CONTEXT).map((r) => r.data.subarray(4).toString());
  }

  it('requires structured replies first', async () => {
    const client = await negotiating();
    client.write(option(NBD_OPT_SET_META_CONTEXT, metaContextRequest('vol', ['base:allocation'])));
    expect((await readOptionReply(client)).type).toBe(NBD_REP_ERR_INVALID);
    client.destroy();
  });

  it('lists base:allocation for no query and for the base: wildcard', async () => {
    const client = await structured();
    client.write(option(NBD_OPT_LIST_META_CONTEXT, metaContextRequest('vol', [])));
    expect(contextNames(await readOptionReplies(client))).toEqual(['base:allocation']);
    client.write(option(NBD_OPT_LIST_META_CONTEXT, metaContextRequest('vol', ['base:'])));
    expect(contextNames(await readOptionReplies(client))).toEqual(['base:allocation']);
    client.destroy();
  });

  it('selects base:allocation with a non-zero id', async () => {
    const client = await structured();
    client.write(option(NBD_OPT_SET_META_CONTEXT, metaContextRequest('vol', ['base:allocation'])));
    const replies = await readOptionReplies(client);
    expect(contextNames(replies)).toEqual(['base:allocation']);
    expect(replies[0]?.data.readUInt32BE(0)).not.toBe(0);
    expect(replies.at(-1)?.type).toBe(NBD_REP_ACK);
    client.destroy();
  });

  it('answers queries for other namespaces with no contexts', async () => {
    const client = await structured();
    client.write(option(NBD_OPT_SET_META_CONTEXT, metaContextRequest('vol', ['qemu:dirty-bitmap:x', 'base:'])));
    const replies = await readOptionReplies(client);
    expect(replies.map((r) => r.type)).toEqual([NBD_REP_ACK]);
    client.destroy();
  });

  it('answers ERR_UNKNOWN for an unknown export', async () => {
    const client = await structured();
    client.write(option(NBD_OPT_LIST_META_CONTEXT, metaContextRequest('nope', [])));
    expect((await readOptionReply(client)).type).toBe(NBD_REP_ERR_UNKNOWN);
    client.destroy();
  });

  it('answers ERR_INVALID for a query without a namespace', async () => {
    const client = await structured();
    client.write(option(NBD_OPT_LIST_META_CONTEXT, metaContextRequest('vol', ['allocation'])));
    expect((await readOptionReply(client)).type).toBe(NBD_REP_ERR_INVALID);
    client.destroy();
  });
});

describe('protocol violations', () => {
  it('closes on a bad option magic', async () => {
    const client = await negotiating();
    const bad = option(NBD_OPT_LIST);
    bad.write('GARBAGE!', 0, 'latin1');
    client.write(bad);
    expect(await client.endsWithoutMoreData()).toBe(true);
  });

  it('closes on option data longer than 64 KiB', async () => {
    const client = await negotiating();
    const header = option(NBD_OPT_GO);
    header.writeUInt32BE(64 * 1024 + 1, 12);
    client.write(header);
    expect(await client.endsWithoutMoreData()).toBe(true);
  });

  it('closes on garbage after the client flags, and forgets the connection', async () => {
    const client = await negotiating();
    client.write(Buffer.alloc(256 * 1024, 0xa5));
    await client.closed;
    await vi.waitFor(() => expect(t.server.connectionCount).toBe(0));
  });
});
