/**
 * Fuzzing the NBD server of a real daemon (`bin/braid serve`) through its socket, with
 * fast-check: random and mutated handshakes, random and mutated requests after a real
 * handshake, disconnects at every byte of a session, bursts of connections beyond the limit,
 * and clients that stall. Meanwhile a well-behaved client writes and verifies a volume of its
 * own ("steady"), which the fuzzing never opens.
 *
 * Checked: every reply is well-formed and answers a request that was sent, once; where the
 * protocol leaves no choice, with the right outcome (an error for what must fail, success for
 * what must succeed); after DISC or end of input every earlier request is answered and the
 * connection closes; connections beyond the limit are closed without a byte (a connect the
 * kernel refuses with EAGAIN, its accept queue full, is counted, not failed). At the end: the
 * daemon is alive and logged no error, it closed the connections that never finished the
 * handshake, its socket descriptors are back at the baseline, its RSS stayed under a generous
 * bound (numbers logged), and the steady client's data is exact (its latency percentiles are
 * logged, not asserted). A client that keeps sending after DISC may be reset when the server
 * closes, so such sessions are not held to "every request answered".
 *
 * Budget: about 60 s in all by default: each property runs until its share of time is used.
 *   Longer: BRAID_FUZZ_RUNS=2000 npx vitest run test/nbd-fuzz.test.ts   (runs per property,
 *   no time limit; the many-connections property does a tenth of that).
 * Reproducing a failure: fast-check prints `seed: S, path: "P"` with the counterexample. Run
 *   BRAID_FUZZ_SEED=S BRAID_FUZZ_PATH=P npx vitest run test/nbd-fuzz.test.ts -t '<test name>'
 * to replay exactly that case. The daemon is shared by all runs, so a bug that needs earlier
 * runs' state may need the seed without the path (the whole sequence again). If the daemon
 * dies, the input of the run that killed it is printed as well: shrinking against a dead
 * daemon proves nothing.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { MiB, seededRandom, sleep, useEngine, waitFor } from './harness.ts';
import {
  CMD_BLOCK_STATUS,
  CMD_DISC,
  CMD_FLAG_FAST_ZERO,
  CMD_FLAG_FUA,
  CMD_FLAG_NO_HOLE,
  CMD_FLAG_REQ_ONE,
  CMD_FLUSH,
  CMD_READ,
  CMD_TRIM,
  CMD_WRITE,
  CMD_WRITE_ZEROES,
  FLAG_FIXED_NEWSTYLE,
  FLAG_NO_ZEROES,
  INFO_BLOCK_SIZE,
  INFO_EXPORT,
  NbdClient,
  OPT_ABORT,
  OPT_EXPORT_NAME,
  OPT_GO,
  OPT_INFO,
  OPT_LIST,
  OPT_LIST_META_CONTEXT,
  OPT_SET_META_CONTEXT,
  OPT_STARTTLS,
  OPT_STRUCTURED_REPLY,
  OPTION_REPLY_MAGIC,
  RawConnection,
  REP_ACK,
  REP_ERR_UNSUP,
  REP_INFO,
  REP_META_CONTEXT,
  REP_SERVER,
  REPLY_FLAG_DONE,
  REPLY_TYPE_BLOCK_STATUS,
  REPLY_TYPE_ERROR,
  REPLY_TYPE_ERROR_OFFSET,
  REPLY_TYPE_NONE,
  REPLY_TYPE_OFFSET_DATA,
  REPLY_TYPE_OFFSET_HOLE,
  REQUEST_MAGIC_VALUE,
  SIMPLE_REPLY_MAGIC_VALUE,
  STRUCTURED_REPLY_MAGIC,
  goData,
  metaContextData,
  optionBytes,
  optionBytesDeclaring,
  requestHeader,
} from './lib/nbd-client.ts';

// ---- Set-up -------------------------------------------------------------------------------

const MAX_CONNECTIONS = 64;
// A small block cache, so that the RSS bound speaks about the NBD server, not about the cache.
const engine = useEngine(['--max-connections', String(MAX_CONNECTIONS), '--max-inflight-write-bytes', '64M', '--cache-size', '64M']);

const FUZZ = 'fuzz';
const SNAP = 'fuzz-snap';
const STEADY = 'steady';
const VOLUME_BYTES = 64 * MiB;
/** What the server advertises as its maximum block size. */
const MAX_REQUEST_BYTES = 32 * MiB;
/** WRITE payloads up to this are sent whole (this covers the 32 MiB + 1 refusal); longer ones end the session. */
const PAYLOAD_SEND_MAX = 33 * MiB;
const RSS_BOUND_BYTES = 1024 * MiB;

const RUNS = Number(process.env['BRAID_FUZZ_RUNS'] ?? '0');
const SEED = process.env['BRAID_FUZZ_SEED'];
const PATH = process.env['BRAID_FUZZ_PATH'];
/** Test timeout: generous by default, unbounded in effect for long runs. */
const TEST_TIMEOUT_MS = RUNS > 0 ? 24 * 3600_000 : 120_000;

/** fast-check parameters: a time share by default, a number of runs with BRAID_FUZZ_RUNS. */
function fuzzParams(timeShareMs: number, runsDivisor = 1): fc.Parameters<unknown> {
  const params: fc.Parameters<unknown> =
    RUNS > 0 ? { numRuns: Math.max(1, Math.floor(RUNS / runsDivisor)) } : { numRuns: 1_000_000, plugins: [fc.interruptAfterTimeLimit(timeShareMs)] };
  if (SEED !== undefined) params.seed = Number(SEED);
  if (PATH !== undefined) params.path = PATH;
  return params;
}

const E = {
  PERM: 1,
  IO: 5,
  NOMEM: 12,
  INVAL: 22,
  NOSPC: 28,
  OVERFLOW: 75,
  NOTSUP: 95,
  SHUTDOWN: 108,
};
const KNOWN_ERRNOS = new Set(Object.values(E));

let daemonPid = 0;
let deathReported = false;

/** What the fuzzing exercised, logged at the end so that a quiet pass can be told from an empty one. */
const seen = {
  handshakes: 0,
  honestHandshakes: 0,
  handshakeRepliesChecked: 0,
  requestSessions: 0,
  predictableSessions: 0,
  repliesChecked: 0,
  mustFail: 0,
  mustSucceed: 0,
};

/** Fails the run if the daemon is gone, printing the input of the first run that saw it. */
async function expectDaemonAlive(input: unknown): Promise<void> {
  const status = await engine().exitedStatus();
  if (status === null) return;
  if (!deathReported) {
    deathReported = true;
    console.error(`the daemon exited (${JSON.stringify(status)}) after this input:\n${fc.stringify(input)}`);
  }
  throw new Error('the daemon is not running');
}

// ---- The process seen from outside ----------------------------------------------------------

interface FdCounts {
  sockets: number;
  segments: number;
  other: number;
}

function fdCounts(pid: number): FdCounts {
  const counts = { sockets: 0, segments: 0, other: 0 };
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // Closed while we looked.
    }
    if (target.startsWith('socket:')) counts.sockets++;
    else if (/segment-[^/]*\.log$/.test(target)) counts.segments++;
    else counts.other++;
  }
  return counts;
}

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

/** Samples the daemon's RSS while the fuzzing runs. */
class RssSampler {
  peakBytes = 0;
  /** Peak since the last takePhasePeak(). */
  private phasePeakBytes = 0;
  private timer: NodeJS.Timeout | null = null;

  start(pid: number): void {
    this.timer = setInterval(() => {
      try {
        const now = rssBytes(pid);
        this.peakBytes = Math.max(this.peakBytes, now);
        this.phasePeakBytes = Math.max(this.phasePeakBytes, now);
      } catch {
        // The process is gone; the liveness checks report that.
      }
    }, 100);
  }

  takePhasePeak(): number {
    const peak = this.phasePeakBytes;
    this.phasePeakBytes = 0;
    return peak;
  }

  stop(): void {
    if (this.timer !== null) clearInterval(this.timer);
  }
}

const mib = (bytes: number): string => `${(bytes / MiB).toFixed(1)} MiB`;

// ---- The well-behaved client ----------------------------------------------------------------

/**
 * One request at a time on volume "steady", so its mirror is exact: random writes (some FUA,
 * some followed by a flush) and reads of what it wrote, compared byte for byte.
 */
class SteadyClient {
  readonly mirror = Buffer.alloc(VOLUME_BYTES);
  readonly problems: string[] = [];
  readonly latenciesMs: number[] = [];
  verifiedBytes = 0;
  private stopped = false;
  private loop: Promise<void> = Promise.resolve();
  private client: NbdClient | null = null;

  async start(socketPath: string): Promise<void> {
    const client = await NbdClient.connect(socketPath, STEADY);
    this.client = client;
    const rand = seededRandom(0x5eed);
    this.loop = (async () => {
      while (!this.stopped) {
        const length = 1 + Math.floor(rand() * 128 * 1024);
        const offset = Math.floor(rand() * (VOLUME_BYTES - length));
        const started = performance.now();
        try {
          if (rand() < 0.6) {
            const data = Buffer.alloc(length, Math.floor(rand() * 256));
            if (length >= 4) data.writeUInt32LE(Math.floor(rand() * 2 ** 32), 0);
            await client.write(offset, data, rand() < 0.1);
            data.copy(this.mirror, offset);
            if (rand() < 0.1) await client.flush();
          } else {
            const got = await client.read(offset, length);
            if (!got.equals(this.mirror.subarray(offset, offset + length))) {
              this.problems.push(`read ${offset}+${length} differs from what was written`);
            }
            this.verifiedBytes += length;
          }
        } catch (err) {
          this.problems.push(`${err instanceof Error ? err.message : String(err)}`);
          return;
        }
        this.latenciesMs.push(performance.now() - started);
      }
    })();
  }

  /** Stops the loop and reads the whole volume back on a fresh connection. */
  async stopAndVerify(socketPath: string): Promise<void> {
    this.stopped = true;
    await this.loop;
    await this.client?.disconnect();
    const c = await NbdClient.connect(socketPath, STEADY);
    try {
      const all = await c.readAll(0, VOLUME_BYTES, 4 * MiB);
      if (!all.equals(this.mirror)) this.problems.push('the volume differs from what its client wrote');
      this.verifiedBytes += VOLUME_BYTES;
    } finally {
      await c.disconnect();
    }
  }

  latencySummary(): string {
    const sorted = [...this.latenciesMs].sort((a, b) => a - b);
    const at = (q: number): string => (sorted.length === 0 ? '-' : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0).toFixed(2));
    return `${sorted.length} ops, latency ms p50 ${at(0.5)} p90 ${at(0.9)} p99 ${at(0.99)} max ${at(1)}`;
  }
}

// ---- Handshakes: scripts, encoding, and what an honest script must get back ------------------

/** A byte of an encoded script XORed with a value (index taken modulo the length). */
interface Flip {
  at: number;
  xor: number;
}

/** null most of the time, a value from `arb` once in `oneIn`. */
function rarely<T>(arb: fc.Arbitrary<T>, oneIn: number): fc.Arbitrary<T | null> {
  return fc.oneof({ weight: oneIn - 1, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: arb });
}

const flipArb: fc.Arbitrary<Flip> = fc.record({ at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) });

interface HandshakeOption {
  /** null: the right magic; otherwise 8 other bytes. */
  magic: Uint8Array | null;
  code: number;
  data: Uint8Array;
  /** null: the true length of data; otherwise a lie. */
  declaredLength: number | null;
}

interface HandshakeScript {
  clientFlags: number;
  options: HandshakeOption[];
  /** Bytes after the last option (requests, if a GO succeeded; garbage otherwise). */
  tail: Uint8Array;
  /** Byte flips applied to the encoded script (index modulo its length). */
  flips: Flip[];
  /** Send only this many bytes (modulo length + 1). */
  cutAt: number | null;
  ending: 'destroy' | 'end' | 'wait';
}

const nameBytesArb: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(FUZZ, SNAP, 'no-such-volume', '').map((n) => Buffer.from(n)) },
  { weight: 2, arbitrary: fc.string({ maxLength: 24 }).filter((n) => n !== STEADY).map((n) => Buffer.from(n)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 24 }) }, // often not UTF-8, may hold NUL
  { weight: 1, arbitrary: fc.constant(Buffer.alloc(4097, 0x61)) }, // beyond the 4 KiB string limit
);

/** INFO/GO data from raw name bytes, with the name length field possibly lying. */
function infoData(name: Uint8Array, infos: number[], nameLengthLie: number | null): Buffer {
  const b = Buffer.alloc(4 + name.length + 2 + 2 * infos.length);
  b.writeUInt32BE((nameLengthLie ?? name.length) >>> 0, 0);
  Buffer.from(name).copy(b, 4);
  b.writeUInt16BE(infos.length, 4 + name.length);
  infos.forEach((t, i) => b.writeUInt16BE(t, 6 + name.length + 2 * i));
  return b;
}

const queryArb = fc.oneof(
  fc.constantFrom('base:allocation', 'base:', 'qemu:dirty-bitmap:x', 'nocolon', ':x', ''),
  fc.string({ maxLength: 20 }),
);

const optionArb: fc.Arbitrary<HandshakeOption> = fc
  .record({
    magicOk: fc.oneof({ weight: 30, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    badMagic: fc.uint8Array({ minLength: 8, maxLength: 8 }),
    lie: rarely(fc.oneof(fc.constantFrom(0, 64 * 1024, 64 * 1024 + 1, 0xffffffff), fc.integer({ min: 0, max: 64 })), 12),
    body: fc.oneof(
      {
        weight: 6,
        arbitrary: fc
          .record({
            code: fc.constantFrom(OPT_GO, OPT_INFO),
            name: nameBytesArb,
            infos: fc.array(fc.oneof(fc.constantFrom(0, 1, 2, 3), fc.integer({ min: 0, max: 0xffff })), { maxLength: 5 }),
            nameLengthLie: rarely(fc.oneof(fc.constant(0xffffffff), fc.integer({ min: 0, max: 40 })), 8),
          })
          .map((r) => ({ code: r.code, data: infoData(r.name, r.infos, r.nameLengthLie) })),
      },
      {
        weight: 3,
        arbitrary: fc
          .record({ code: fc.constantFrom(OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT), name: fc.constantFrom(FUZZ, SNAP, 'nope'), queries: fc.array(queryArb, { maxLength: 3 }) })
          .map((r) => ({ code: r.code, data: metaContextData(r.name, r.queries) })),
      },
      {
        weight: 4,
        arbitrary: fc.record({
          code: fc.constantFrom(OPT_STRUCTURED_REPLY, OPT_STRUCTURED_REPLY, OPT_LIST, OPT_ABORT, OPT_STARTTLS),
          data: fc.oneof({ weight: 5, arbitrary: fc.constant(new Uint8Array(0)) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 16 }) }),
        }),
      },
      { weight: 1, arbitrary: nameBytesArb.map((name) => ({ code: OPT_EXPORT_NAME, data: name })) },
      {
        weight: 2,
        arbitrary: fc.record({
          code: fc.oneof(fc.integer({ min: 0, max: 16 }), fc.integer({ min: 0, max: 0xffffffff })),
          data: fc.uint8Array({ maxLength: 48 }),
        }),
      },
    ),
  })
  .map((r) => ({ magic: r.magicOk ? null : r.badMagic, code: r.body.code, data: r.body.data, declaredLength: r.lie }));

const handshakeScriptArb: fc.Arbitrary<HandshakeScript> = fc.record({
  clientFlags: fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES, FLAG_FIXED_NEWSTYLE) },
    { weight: 1, arbitrary: fc.constantFrom(0, FLAG_NO_ZEROES) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
  ),
  options: fc.array(optionArb, { maxLength: 8 }),
  tail: fc.oneof({ weight: 4, arbitrary: fc.constant(new Uint8Array(0)) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) }),
  flips: fc.oneof(
    { weight: 3, arbitrary: fc.constant<Flip[]>([]) },
    { weight: 1, arbitrary: fc.array(flipArb, { minLength: 1, maxLength: 4 }) },
  ),
  cutAt: rarely(fc.nat(), 4),
  ending: fc.constantFrom('destroy', 'end', 'wait'),
});

function encodeHandshake(script: HandshakeScript): Buffer {
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(script.clientFlags >>> 0, 0);
  const parts: Buffer[] = [flags];
  for (const o of script.options) {
    const data = Buffer.from(o.data);
    const magic = o.magic === null ? undefined : Buffer.from(o.magic);
    parts.push(optionBytesDeclaring(o.code, o.declaredLength ?? data.length, data, magic));
  }
  parts.push(Buffer.from(script.tail));
  const bytes = Buffer.concat(parts);
  for (const f of script.flips) {
    if (bytes.length > 0) bytes[f.at % bytes.length]! ^= f.xor;
  }
  return script.cutAt === null ? bytes : bytes.subarray(0, script.cutAt % (bytes.length + 1));
}

/** A script whose every length and magic is true: the server's answers can be predicted. */
function isHonest(script: HandshakeScript): boolean {
  return (
    script.flips.length === 0 &&
    script.cutAt === null &&
    script.tail.length === 0 &&
    script.options.every((o) => o.magic === null && o.declaredLength === null)
  );
}

const GREETING = Buffer.concat([Buffer.from('NBDMAGIC'), Buffer.from('IHAVEOPT')]);
const KNOWN_OPTIONS = new Set([OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT]);
/** Reply types that may come before the final one, per option. */
const PARTIAL_REPLIES = new Map<number, number>([
  [OPT_LIST, REP_SERVER],
  [OPT_INFO, REP_INFO],
  [OPT_GO, REP_INFO],
  [OPT_LIST_META_CONTEXT, REP_META_CONTEXT],
  [OPT_SET_META_CONTEXT, REP_META_CONTEXT],
]);

/**
 * What came back for a handshake script: null if acceptable, else what is wrong. Zero bytes is
 * a refused connection. The greeting is always checked; option replies only for honest scripts.
 */
function handshakeProblem(script: HandshakeScript, got: Buffer): string | null {
  if (got.length === 0) return null;
  if (got.length < 18) return `short greeting (${got.length} bytes)`;
  if (!got.subarray(0, 16).equals(GREETING)) return `bad greeting ${got.subarray(0, 18).toString('hex')}`;
  if ((got.readUInt16BE(16) & FLAG_FIXED_NEWSTYLE) === 0) return 'greeting without FIXED_NEWSTYLE';
  if (!isHonest(script)) return null;
  seen.honestHandshakes++;
  let at = 18;
  if ((script.clientFlags & ~(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)) !== 0) {
    return at === got.length ? null : 'replies after unknown client flags';
  }
  for (const o of script.options) {
    if (o.code === OPT_EXPORT_NAME) return null; // Its reply has no magic; transmission (or a hang-up) follows.
    if (o.data.length > 64 * 1024) return at === got.length ? null : 'replies after an over-long option';
    for (;;) {
      if (got.length - at < 20) return null; // We stopped listening, or it had nothing more to say.
      if (got.readBigUInt64BE(at) !== OPTION_REPLY_MAGIC) return `bad option reply magic at byte ${at}`;
      const option = got.readUInt32BE(at + 8);
      const type = got.readUInt32BE(at + 12);
      const length = got.readUInt32BE(at + 16);
      if (option !== (o.code >>> 0)) return `reply for option ${option} while answering ${o.code}`;
      at += 20 + length;
      if (at > got.length) return null;
      seen.handshakeRepliesChecked++;
      const final = type === REP_ACK || type >= 0x8000_0000;
      if (!final) {
        if (PARTIAL_REPLIES.get(o.code) !== type) return `reply type ${type} to option ${o.code}`;
        continue;
      }
      if (!KNOWN_OPTIONS.has(o.code) && type !== REP_ERR_UNSUP) return `unknown option ${o.code} answered ${type.toString(16)}`;
      if (type === REP_ACK && o.code === OPT_GO) return null; // Transmission from here.
      if (type === REP_ACK && o.code === OPT_ABORT) return at === got.length ? null : 'bytes after the ABORT acknowledgement';
      break;
    }
  }
  return null;
}

async function runHandshake(socketPath: string, script: HandshakeScript): Promise<string | null> {
  seen.handshakes++;
  const conn = await RawConnection.open(socketPath);
  try {
    await conn.send(encodeHandshake(script));
    if (script.ending === 'end') conn.end();
    if (script.ending !== 'destroy') await conn.settle(30, 3_000);
    else await sleep(1);
    return handshakeProblem(script, conn.takeAll());
  } finally {
    conn.destroy();
  }
}

// ---- Transmission: scripts, encoding, and checking the replies -------------------------------

interface Entry {
  exportName: typeof FUZZ | typeof SNAP;
  structured: boolean;
  allocation: boolean;
  via: 'go' | 'export-name';
  noZeroes: boolean;
}

interface FuzzRequest {
  /** null: the right magic. */
  badMagic: number | null;
  type: number;
  flags: number;
  offset: bigint;
  length: number;
}

interface RequestScript {
  entry: Entry;
  requests: FuzzRequest[];
  ending: 'disc' | 'end' | 'destroy';
  /** Byte flips in the request stream (which then stops being predictable). */
  flips: Flip[];
  /** Pieces the stream is sent in. */
  splits: number[];
}

const entryArb: fc.Arbitrary<Entry> = fc
  .record({
    exportName: fc.constantFrom(FUZZ, FUZZ, SNAP),
    structured: fc.boolean(),
    allocation: fc.boolean(),
    via: fc.oneof({ weight: 5, arbitrary: fc.constant('go' as const) }, { weight: 1, arbitrary: fc.constant('export-name' as const) }),
    noZeroes: fc.boolean(),
  })
  .map((e) => ({ ...e, allocation: e.allocation && e.structured && e.via === 'go' }));

const KNOWN_COMMANDS = [CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS];
const ALL_FLAGS = [CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, 1 << 2, CMD_FLAG_REQ_ONE, CMD_FLAG_FAST_ZERO];

const requestArb: fc.Arbitrary<FuzzRequest> = fc.record({
  badMagic: rarely(fc.integer({ min: 0, max: 0xffffffff }).filter((m) => m !== REQUEST_MAGIC_VALUE), 60),
  type: fc.oneof(
    { weight: 16, arbitrary: fc.constantFrom(...KNOWN_COMMANDS) },
    { weight: 1, arbitrary: fc.constantFrom(CMD_DISC, 5, 8, 9, 0xffff) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
  ),
  flags: fc.oneof(
    { weight: 8, arbitrary: fc.constant(0) },
    { weight: 4, arbitrary: fc.subarray(ALL_FLAGS).map((fs) => fs.reduce((a, b) => a | b, 0)) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffff }) },
  ),
  offset: fc.oneof(
    { weight: 6, arbitrary: fc.integer({ min: 0, max: VOLUME_BYTES / 4096 - 1 }).map((b) => BigInt(b * 4096)) },
    { weight: 4, arbitrary: fc.integer({ min: 0, max: VOLUME_BYTES - 1 }).map(BigInt) },
    { weight: 2, arbitrary: fc.constantFrom(VOLUME_BYTES - 1, VOLUME_BYTES - 4096, VOLUME_BYTES, VOLUME_BYTES + 1, 2 ** 53 - 1, 2 ** 53).map(BigInt) },
    { weight: 1, arbitrary: fc.constantFrom(2n ** 63n, 2n ** 64n - 1n, 2n ** 64n - 4096n) },
    { weight: 1, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) },
  ),
  length: fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(0, 1, 512, 4096, 65536) },
    { weight: 6, arbitrary: fc.integer({ min: 1, max: 256 * 1024 }) },
    { weight: 1, arbitrary: fc.constantFrom(MAX_REQUEST_BYTES, MAX_REQUEST_BYTES + 1, 2 ** 31, 0xffffffff) },
    { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xffffffff }) },
  ),
});

const requestScriptArb: fc.Arbitrary<RequestScript> = fc.record({
  entry: entryArb,
  requests: fc.array(requestArb, { minLength: 1, maxLength: 24 }),
  ending: fc.constantFrom('disc', 'end', 'destroy'),
  flips: fc.oneof(
    { weight: 8, arbitrary: fc.constant<Flip[]>([]) },
    { weight: 1, arbitrary: fc.array(flipArb, { minLength: 1, maxLength: 3 }) },
  ),
  splits: fc.array(fc.integer({ min: 1, max: 8192 }), { maxLength: 3 }),
});

interface Sent {
  request: FuzzRequest;
  /** Index in the script; requests after a DISC are sent but must not be answered. */
  index: number;
  afterDisc: boolean;
  /** Errno of the final reply, null until answered. */
  errno: number | null;
  /** Structured replies: bytes of READ data received, to check coverage. */
  dataBytes: number;
}

/** The request stream as bytes, and what an honest server must do with it. */
interface EncodedRequests {
  bytes: Buffer;
  byHandle: Map<bigint, Sent>;
  /** The stream stays in step with the server: no flips, no bad magic, no cut payload. */
  predictable: boolean;
  /** A bad magic was sent: the server closes at once, and replies may be cut short. */
  badMagicSent: boolean;
  /** The stream was cut inside a WRITE payload (too long to send). */
  cut: boolean;
  /**
   * Requests followed a DISC. The server closes without reading them, which resets the
   * connection; a Node client still writing then loses replies it had not read yet.
   */
  sentAfterDisc: boolean;
}

function encodeRequests(script: RequestScript): EncodedRequests {
  const parts: Buffer[] = [];
  const byHandle = new Map<bigint, Sent>();
  let afterDisc = false;
  let sentAfterDisc = false;
  let badMagicSent = false;
  let cut = false;
  for (const [index, r] of script.requests.entries()) {
    const handle = (BigInt(index + 1) << 32n) | 0xfeedn;
    const isWrite = r.type === CMD_WRITE && r.badMagic === null;
    if (afterDisc) sentAfterDisc = true;
    parts.push(requestHeader({ magic: r.badMagic ?? REQUEST_MAGIC_VALUE, flags: r.flags, type: r.type, handle, offset: r.offset, length: r.length }));
    if (r.badMagic !== null) badMagicSent = true;
    if (r.type !== CMD_DISC || r.badMagic !== null) byHandle.set(handle, { request: r, index, afterDisc, errno: null, dataBytes: 0 });
    if (r.type === CMD_DISC && r.badMagic === null) afterDisc = true;
    if (isWrite && r.length > 0) {
      if (r.length > PAYLOAD_SEND_MAX) {
        parts.push(Buffer.alloc(64 * 1024, 0xc5));
        cut = true;
        break;
      }
      parts.push(Buffer.alloc(r.length, (index * 37) & 0xff));
    }
    if (badMagicSent) break;
  }
  if (!cut && !badMagicSent && script.ending === 'disc') {
    parts.push(requestHeader({ flags: 0, type: CMD_DISC, handle: 0n, offset: 0n, length: 0 }));
  }
  const bytes = Buffer.concat(parts);
  for (const f of script.flips) {
    if (bytes.length > 0) bytes[f.at % bytes.length]! ^= f.xor;
  }
  return { bytes, byHandle, predictable: script.flips.length === 0 && !badMagicSent && !cut, badMagicSent, cut, sentAfterDisc };
}

/** Flags each command may carry; anything else must be refused. */
function allowedFlags(type: number): number {
  if (type === CMD_WRITE_ZEROES) return CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO;
  if (type === CMD_BLOCK_STATUS) return CMD_FLAG_FUA | CMD_FLAG_REQ_ONE;
  return CMD_FLAG_FUA;
}

/** 'fail', 'succeed', or 'either' where the protocol leaves the server a choice. */
function expectedOutcome(r: FuzzRequest, entry: Entry, sizeBytes: number): 'fail' | 'succeed' | 'either' {
  if (!KNOWN_COMMANDS.includes(r.type)) return 'fail';
  if ((r.flags & ~allowedFlags(r.type)) !== 0) return 'fail';
  const ranged = r.type !== CMD_FLUSH;
  if (!ranged) return r.offset === 0n && r.length === 0 ? 'succeed' : 'either';
  if ((r.type === CMD_READ || r.type === CMD_WRITE) && r.length > MAX_REQUEST_BYTES) return 'fail';
  const modifies = r.type === CMD_WRITE || r.type === CMD_TRIM || r.type === CMD_WRITE_ZEROES;
  if (modifies && entry.exportName === SNAP) return 'fail';
  if (r.type === CMD_BLOCK_STATUS && (!entry.allocation || r.length === 0)) return 'fail';
  const end = r.offset + BigInt(r.length);
  if (r.length > 0 && end > BigInt(sizeBytes)) return 'fail';
  if (r.offset >= 2n ** 53n) return 'fail';
  if (r.offset > BigInt(sizeBytes)) return 'either';
  return 'succeed';
}

/**
 * Walks the reply stream. Returns what is wrong, or null. `complete`: the server closed
 * gracefully, so no reply may be cut short.
 */
function repliesProblem(got: Buffer, enc: EncodedRequests, entry: Entry, sizeBytes: number, complete: boolean): string | null {
  let at = 0;
  const truncated = (): string | null => (complete ? `reply cut short at byte ${at} of ${got.length}` : null);
  while (at < got.length) {
    if (got.length - at < 4) return truncated();
    const magic = got.readUInt32BE(at);
    if (magic === SIMPLE_REPLY_MAGIC_VALUE) {
      if (got.length - at < 16) return truncated();
      const errno = got.readUInt32BE(at + 4);
      const handle = got.readBigUInt64BE(at + 8);
      at += 16;
      const sent = enc.byHandle.get(handle);
      if (sent === undefined) return `simple reply for unknown handle ${handle}`;
      if (sent.errno !== null) return `second reply for request ${sent.index}`;
      if (sent.afterDisc) return `reply to request ${sent.index}, sent after DISC`;
      if (errno !== 0 && !KNOWN_ERRNOS.has(errno)) return `unknown errno ${errno}`;
      if (sent.request.type === CMD_READ && errno === 0) {
        if (entry.structured) return `simple success reply to READ ${sent.index} after structured replies were negotiated`;
        at += sent.request.length;
        if (at > got.length) return truncated();
      }
      sent.errno = errno;
    } else if (magic === STRUCTURED_REPLY_MAGIC) {
      if (!entry.structured) return 'structured reply without negotiation';
      if (got.length - at < 20) return truncated();
      const flags = got.readUInt16BE(at + 4);
      const type = got.readUInt16BE(at + 6);
      const handle = got.readBigUInt64BE(at + 8);
      const length = got.readUInt32BE(at + 16);
      const payload = got.subarray(at + 20, at + 20 + length);
      at += 20 + length;
      if (at > got.length) return truncated();
      const sent = enc.byHandle.get(handle);
      if (sent === undefined) return `structured reply for unknown handle ${handle}`;
      if (sent.errno !== null) return `chunk after the final reply to request ${sent.index}`;
      if (sent.afterDisc) return `reply to request ${sent.index}, sent after DISC`;
      const r = sent.request;
      let errno = 0;
      switch (type) {
        case REPLY_TYPE_NONE:
          if (length !== 0 || (flags & REPLY_FLAG_DONE) === 0) return 'NONE chunk with a payload or not final';
          break;
        case REPLY_TYPE_OFFSET_DATA:
        case REPLY_TYPE_OFFSET_HOLE: {
          if (r.type !== CMD_READ) return `data chunk for a non-READ (request ${sent.index})`;
          if (length < (type === REPLY_TYPE_OFFSET_DATA ? 9 : 12)) return `data chunk of ${length} bytes`;
          const chunkOffset = payload.readBigUInt64BE(0);
          const dataBytes = type === REPLY_TYPE_OFFSET_DATA ? length - 8 : payload.readUInt32BE(8);
          if (dataBytes <= 0 || chunkOffset < r.offset || chunkOffset + BigInt(dataBytes) > r.offset + BigInt(r.length)) {
            return `data chunk outside READ ${sent.index}`;
          }
          sent.dataBytes += dataBytes;
          break;
        }
        case REPLY_TYPE_BLOCK_STATUS: {
          if (r.type !== CMD_BLOCK_STATUS) return `block status chunk for a non-BLOCK_STATUS (request ${sent.index})`;
          if (length < 12 || (length - 4) % 8 !== 0) return `block status chunk of ${length} bytes`;
          let covered = 0;
          for (let p = 4; p < length; p += 8) {
            const extent = payload.readUInt32BE(p);
            if (extent === 0) return 'empty extent';
            covered += extent;
          }
          if (covered > r.length) return `extents cover ${covered} bytes of ${r.length} asked`;
          if ((r.flags & CMD_FLAG_REQ_ONE) !== 0 && length !== 12) return 'REQ_ONE answered with several extents';
          break;
        }
        case REPLY_TYPE_ERROR:
        case REPLY_TYPE_ERROR_OFFSET: {
          if (length < 6) return 'error chunk too short';
          errno = payload.readUInt32BE(0);
          const messageBytes = payload.readUInt16BE(4);
          if (errno === 0 || !KNOWN_ERRNOS.has(errno)) return `error chunk with errno ${errno}`;
          if (6 + messageBytes > length) return 'error message longer than its chunk';
          break;
        }
        default:
          return `unknown chunk type ${type}`;
      }
      if ((flags & REPLY_FLAG_DONE) !== 0) {
        if (errno === 0 && r.type === CMD_READ && sent.dataBytes !== r.length) return `READ ${sent.index} answered ${sent.dataBytes} of ${r.length} bytes`;
        sent.errno = errno;
      }
    } else {
      return `bad reply magic 0x${magic.toString(16)} at byte ${at}`;
    }
  }
  for (const sent of enc.byHandle.values()) {
    if (sent.errno === null) {
      if (complete && enc.predictable && !sent.afterDisc) return `request ${sent.index} never answered`;
      continue;
    }
    const expected = expectedOutcome(sent.request, entry, sizeBytes);
    seen.repliesChecked++;
    if (expected === 'fail') seen.mustFail++;
    if (expected === 'succeed') seen.mustSucceed++;
    if (expected === 'fail' && sent.errno === 0) return `request ${sent.index} ${fc.stringify(sent.request)} succeeded but must fail`;
    if (expected === 'succeed' && sent.errno !== 0) return `request ${sent.index} ${fc.stringify(sent.request)} failed with ${sent.errno} but must succeed`;
  }
  return null;
}

/** An honest handshake to the script's export; returns the export size, or throws. */
async function negotiate(conn: RawConnection, entry: Entry): Promise<number> {
  const expectRead = async (n: number): Promise<Buffer> => {
    const b = await conn.read(n);
    if (b === null) throw new Error('the server closed during an honest handshake');
    return b;
  };
  const readOption = async (): Promise<{ option: number; type: number; data: Buffer }> => {
    const h = await expectRead(20);
    if (h.readBigUInt64BE(0) !== OPTION_REPLY_MAGIC) throw new Error('bad option reply magic');
    const length = h.readUInt32BE(16);
    return { option: h.readUInt32BE(8), type: h.readUInt32BE(12), data: length > 0 ? await expectRead(length) : Buffer.alloc(0) };
  };
  const untilFinal = async (): Promise<{ option: number; type: number; data: Buffer }[]> => {
    const all = [];
    for (;;) {
      const r = await readOption();
      all.push(r);
      if (r.type === REP_ACK || r.type >= 0x8000_0000) return all;
    }
  };
  const greeting = await expectRead(18);
  if (!greeting.subarray(0, 16).equals(GREETING)) throw new Error('bad greeting');
  const flags = Buffer.alloc(4);
  flags.writeUInt32BE(FLAG_FIXED_NEWSTYLE | (entry.noZeroes ? FLAG_NO_ZEROES : 0), 0);
  await conn.send(flags);
  if (entry.structured) {
    await conn.send(optionBytes(OPT_STRUCTURED_REPLY, Buffer.alloc(0)));
    if ((await untilFinal()).at(-1)?.type !== REP_ACK) throw new Error('STRUCTURED_REPLY refused');
  }
  if (entry.allocation) {
    await conn.send(optionBytes(OPT_SET_META_CONTEXT, metaContextData(entry.exportName, ['base:allocation'])));
    const replies = await untilFinal();
    if (replies.at(-1)?.type !== REP_ACK || !replies.some((r) => r.type === REP_META_CONTEXT)) throw new Error('base:allocation not selected');
  }
  if (entry.via === 'export-name') {
    await conn.send(optionBytes(OPT_EXPORT_NAME, Buffer.from(entry.exportName)));
    const reply = await expectRead(10 + (entry.noZeroes ? 0 : 124));
    return Number(reply.readBigUInt64BE(0));
  }
  await conn.send(optionBytes(OPT_GO, goData(entry.exportName, [INFO_BLOCK_SIZE])));
  let sizeBytes = -1;
  for (const r of await untilFinal()) {
    if (r.type === REP_INFO && r.data.readUInt16BE(0) === INFO_EXPORT) sizeBytes = Number(r.data.readBigUInt64BE(2));
    else if (r.type !== REP_INFO && r.type !== REP_ACK) throw new Error(`GO refused: ${r.type.toString(16)} ${r.data.toString()}`);
  }
  if (sizeBytes < 0) throw new Error('GO acknowledged without NBD_INFO_EXPORT');
  return sizeBytes;
}

async function sendInPieces(conn: RawConnection, bytes: Buffer, splits: readonly number[]): Promise<void> {
  let at = 0;
  for (const n of splits) {
    if (at >= bytes.length) break;
    await conn.send(bytes.subarray(at, at + n));
    at += n;
    await sleep(0);
  }
  if (at < bytes.length) await conn.send(bytes.subarray(at));
}

async function runRequests(socketPath: string, script: RequestScript): Promise<string | null> {
  seen.requestSessions++;
  const conn = await RawConnection.open(socketPath);
  try {
    const sizeBytes = await negotiate(conn, script.entry);
    if (sizeBytes !== VOLUME_BYTES) return `export size ${sizeBytes}`;
    const enc = encodeRequests(script);
    await sendInPieces(conn, enc.bytes, script.splits);
    if (script.flips.length > 0) {
      // Handles and lengths may be mangled: only liveness can be judged.
      await conn.settle(30, 5_000);
      return null;
    }
    const graceful = enc.predictable && script.ending !== 'destroy' && !enc.sentAfterDisc;
    if (graceful) seen.predictableSessions++;
    if (script.ending === 'end') conn.end();
    if (script.ending === 'destroy') {
      await conn.settle(20, 2_000);
      conn.destroy();
    } else if (enc.predictable) {
      // DISC or end of input: everything before it is answered, then the server closes.
      if (!(await conn.waitClosedByPeer(60_000))) return 'the server did not close after DISC / end of input';
    } else {
      await conn.settle(30, 5_000);
    }
    return repliesProblem(conn.takeAll(), enc, script.entry, sizeBytes, graceful);
  } finally {
    conn.destroy();
  }
}

// ---- The tests --------------------------------------------------------------------------------

describe('NBD fuzzing against a real daemon', () => {
  const steady = new SteadyClient();
  const rss = new RssSampler();
  let baseline: FdCounts;
  let baselineRss = 0;
  /** Connections that never finish the handshake: the daemon must close them itself. */
  const idle: RawConnection[] = [];
  let refusedTotal = 0;
  let backlogFullTotal = 0;
  let manyConnectionRuns = 0;

  beforeAll(async () => {
    const e = engine();
    daemonPid = e.pid ?? 0;
    await e.createVolume(FUZZ, '64M');
    await e.createVolume(STEADY, '64M');
    await e.cliOk(['snapshot', 'create', FUZZ, SNAP]);
    await steady.start(e.nbdSocket);
    // Let the steady client open what it lazily opens (segment files) before the baseline.
    await sleep(500);
    baseline = fdCounts(daemonPid);
    baselineRss = rssBytes(daemonPid);
    rss.start(daemonPid);
    for (let i = 0; i < 8; i++) {
      const c = await RawConnection.open(e.nbdSocket);
      if (i % 2 === 1) {
        await c.read(18);
        await c.send(Buffer.from([0, 0, 0, FLAG_FIXED_NEWSTYLE]));
      }
      idle.push(c);
    }
  });

  afterEach(({ task }) => {
    try {
      console.log(`RSS during "${task.name}": peak ${mib(rss.takePhasePeak())}, now ${mib(rssBytes(daemonPid))}`);
    } catch {
      // The daemon is gone; the test says so.
    }
  });

  afterAll(() => {
    rss.stop();
    for (const c of idle) c.destroy();
  });

  it(
    'random and mutated handshakes',
    async () => {
      await fc.assert(
        fc.asyncProperty(handshakeScriptArb, async (script) => {
          const problem = await runHandshake(engine().nbdSocket, script);
          await expectDaemonAlive(script);
          if (problem !== null) throw new Error(problem);
        }),
        fuzzParams(12_000),
      );
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'random and mutated requests after a real handshake',
    async () => {
      await fc.assert(
        fc.asyncProperty(requestScriptArb, async (script) => {
          const problem = await runRequests(engine().nbdSocket, script);
          await expectDaemonAlive(script);
          if (problem !== null) throw new Error(problem);
        }),
        fuzzParams(18_000),
      );
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'disconnects at every byte of a session, by reset and by half-close',
    async () => {
      const socketPath = engine().nbdSocket;
      const session = Buffer.concat([
        Buffer.from([0, 0, 0, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES]),
        optionBytes(OPT_STRUCTURED_REPLY, Buffer.alloc(0)),
        optionBytes(OPT_SET_META_CONTEXT, metaContextData(FUZZ, ['base:allocation'])),
        optionBytes(OPT_GO, goData(FUZZ, [INFO_BLOCK_SIZE])),
        requestHeader({ flags: 0, type: CMD_WRITE, handle: 1n, offset: 40_960n + 100n, length: 300 }),
        Buffer.alloc(300, 0x77),
        requestHeader({ flags: 0, type: CMD_READ, handle: 2n, offset: 40_960n, length: 4096 }),
        requestHeader({ flags: 0, type: CMD_BLOCK_STATUS, handle: 3n, offset: 0n, length: MiB }),
        requestHeader({ flags: CMD_FLAG_FUA, type: CMD_TRIM, handle: 4n, offset: 8192n, length: 8192 }),
        requestHeader({ flags: CMD_FLAG_NO_HOLE, type: CMD_WRITE_ZEROES, handle: 5n, offset: 0n, length: 4096 }),
        requestHeader({ flags: 0, type: CMD_FLUSH, handle: 6n, offset: 0n, length: 0 }),
        requestHeader({ flags: 0, type: CMD_DISC, handle: 7n, offset: 0n, length: 0 }),
      ]);
      const cuts: { at: number; halfClose: boolean }[] = [];
      for (let at = 0; at <= session.length; at++) cuts.push({ at, halfClose: false }, { at, halfClose: true });
      const PARALLEL = 16;
      for (let i = 0; i < cuts.length; i += PARALLEL) {
        await Promise.all(
          cuts.slice(i, i + PARALLEL).map(async ({ at, halfClose }) => {
            const conn = await RawConnection.open(socketPath);
            await conn.send(session.subarray(0, at));
            if (halfClose) {
              conn.end();
              await conn.settle(10, 1_000);
            }
            conn.destroy();
          }),
        );
        await expectDaemonAlive({ cutsFrom: i });
      }
      console.log(`disconnects: ${cuts.length} sessions cut at every byte of ${session.length}`);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'many connections at once, beyond the connection limit',
    async () => {
      // Deterministic first: the limit plus ten, all held open at once. The steady client holds
      // a slot, so at least eleven are refused: closed before a single byte.
      const held = await Promise.all(Array.from({ length: MAX_CONNECTIONS + 10 }, () => RawConnection.open(engine().nbdSocket)));
      await waitFor('every connection greeted or closed', () => held.every((c) => c.bytesReceived >= 18 || c.closedByPeer), 20_000, 20);
      const refusedAtOnce = held.filter((c) => c.closedByPeer && c.bytesReceived === 0).length;
      const greeted = held.filter((c) => c.bytesReceived >= 18).length;
      for (const c of held) c.destroy();
      console.log(`limit: ${greeted} greeted, ${refusedAtOnce} refused of ${held.length} opened at once`);
      expect(refusedAtOnce).toBeGreaterThanOrEqual(11);
      expect(greeted + refusedAtOnce).toBe(held.length);

      const sessionArb = fc.array(fc.option(handshakeScriptArb, { freq: 3 }), { minLength: MAX_CONNECTIONS, maxLength: MAX_CONNECTIONS + 40 });
      await fc.assert(
        fc.asyncProperty(sessionArb, async (scripts) => {
          manyConnectionRuns++;
          const socketPath = engine().nbdSocket;
          const opened = await Promise.allSettled(scripts.map(() => RawConnection.open(socketPath)));
          const results = await Promise.all(
            opened.map(async (o, i) => {
              if (o.status === 'rejected') {
                // The kernel's accept queue was full: refused before the daemon saw it.
                return (o.reason as NodeJS.ErrnoException).code === 'EAGAIN' ? 'backlog full' : `connect failed: ${String(o.reason)}`;
              }
              const conn = o.value;
              const script = scripts[i] ?? null;
              try {
                if (script === null) {
                  // Idle for a moment: refused ones are closed meanwhile.
                  await conn.settle(50, 200);
                  const got = conn.takeAll();
                  if (got.length === 0) return conn.closedByPeer ? 'refused' : null;
                  return handshakeProblem({ clientFlags: 0, options: [], tail: new Uint8Array(0), flips: [], cutAt: 0, ending: 'wait' }, got);
                }
                await conn.send(encodeHandshake(script));
                await conn.settle(30, 3_000);
                const got = conn.takeAll();
                if (got.length === 0 && conn.closedByPeer) return 'refused';
                return handshakeProblem(script, got);
              } finally {
                conn.destroy();
              }
            }),
          );
          refusedTotal += results.filter((r) => r === 'refused').length;
          backlogFullTotal += results.filter((r) => r === 'backlog full').length;
          await expectDaemonAlive(scripts);
          const problem = results.find((r) => r !== null && r !== 'refused' && r !== 'backlog full');
          if (problem !== undefined) throw new Error(problem ?? '');
        }),
        fuzzParams(6_000, 10),
      );
      console.log(
        `many connections: ${manyConnectionRuns} bursts, ${refusedTotal} connections refused at the limit of ${MAX_CONNECTIONS}, ` +
          `${backlogFullTotal} refused by the kernel (accept queue full)`,
      );
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'clients that never read replies or stop mid-payload do not stop the others',
    async () => {
      const socketPath = engine().nbdSocket;
      const entry: Entry = { exportName: FUZZ, structured: false, allocation: false, via: 'go', noZeroes: true };

      // Sends 80 MiB worth of READs and reads nothing.
      const deaf = await RawConnection.open(socketPath);
      await negotiate(deaf, entry);
      deaf.socket.pause();
      const reads: Buffer[] = [];
      for (let i = 0; i < 20_000; i++) {
        reads.push(requestHeader({ flags: 0, type: CMD_READ, handle: BigInt(i), offset: BigInt((i % 16_384) * 4096), length: 4096 }));
      }
      void deaf.send(Buffer.concat(reads));

      // Half of the write budget, claimed and never delivered.
      const staller = await RawConnection.open(socketPath);
      await negotiate(staller, entry);
      await staller.send(requestHeader({ flags: 0, type: CMD_WRITE, handle: 1n, offset: 0n, length: MAX_REQUEST_BYTES }));
      await staller.send(Buffer.alloc(MiB, 0x11));

      await sleep(3_000);
      const during = rssBytes(daemonPid);

      // Someone else still writes and reads back.
      const other = await NbdClient.connect(socketPath, FUZZ);
      const data = Buffer.alloc(64 * 1024, 0x42);
      await other.write(48 * MiB, data);
      expect((await other.read(48 * MiB, data.length)).equals(data)).toBe(true);
      await other.disconnect();

      console.log(`stalled clients: daemon RSS ${mib(during)} while one client ignores 80 MiB of replies and one holds 32 MiB of write budget`);
      deaf.destroy();
      staller.destroy();
      await expectDaemonAlive('stalled clients');
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'afterwards: daemon alive without errors, descriptors back, memory bounded, steady data exact',
    async () => {
      const e = engine();
      await expectDaemonAlive('end of fuzzing');
      // The connections that never finished the handshake were closed by the daemon (30 s).
      await waitFor('the daemon to close handshakes that never finish', () => idle.every((c) => c.closedByPeer), 45_000, 200);

      await steady.stopAndVerify(e.nbdSocket);
      const peak = rss.peakBytes;
      rss.stop();
      // The steady client's own connection is gone now too; one fewer socket than the baseline.
      let now = fdCounts(daemonPid);
      await waitFor(
        'socket descriptors back at the baseline',
        () => {
          now = fdCounts(daemonPid);
          return now.sockets <= baseline.sockets - 1 && now.other <= baseline.other;
        },
        30_000,
        200,
      ).catch((err: unknown) => {
        throw new Error(`${String(err)}: baseline ${JSON.stringify(baseline)}, now ${JSON.stringify(now)}`);
      });
      const after = rssBytes(daemonPid);
      console.log(
        `descriptors: baseline ${JSON.stringify(baseline)}, after ${JSON.stringify(now)}; ` +
          `RSS: baseline ${mib(baselineRss)}, peak ${mib(peak)}, after ${mib(after)} (bound ${mib(RSS_BOUND_BYTES)})`,
      );
      console.log(`steady client: ${steady.latencySummary()}, ${mib(steady.verifiedBytes)} verified`);
      console.log(`exercised: ${JSON.stringify(seen)}`);

      expect(steady.problems).toEqual([]);
      expect(steady.latenciesMs.length).toBeGreaterThan(0);
      expect(peak).toBeLessThan(RSS_BOUND_BYTES);
      const errors = e.errorLogLines();
      expect(errors, errors.slice(0, 5).join('\n')).toEqual([]);
      const limitLines = readFileSync(e.logPath, 'utf8')
        .split('\n')
        .filter((line) => line.includes('connection limit'));
      console.log(`log: ${limitLines.length} lines about the connection limit for ${refusedTotal} refusals`);
      expect(limitLines.length).toBeLessThanOrEqual(2 * manyConnectionRuns + 2);
    },
    TEST_TIMEOUT_MS,
  );
});
