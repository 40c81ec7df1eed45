/**
 * The crash-torture workload and its checker.
 *
 * Every 4 KiB block the workload writes describes itself: a header (magic, volume, block,
 * generation, run id) followed by bytes derived from those values, so a block read back after a
 * crash is either all zeros or decodes to exactly one write that was sent for that very block —
 * anything else (a torn block, a block of another volume or offset, garbage) is detected.
 *
 * The model. Per block, the operations of one round are kept in the order they were sent; a
 * writer never has two operations on the same block in flight, so send order is also the order
 * in which the server applies them. An operation becomes *durable* when it is a FUA write that
 * was acknowledged, or when it was acknowledged before a FLUSH was sent and that FLUSH completed
 * (on the same connection, or on any connection to the same export when the server advertises
 * NBD_FLAG_CAN_MULTI_CONN). After kill -9 and restart each block must hold the value of the
 * last durable operation or of any later operation that was sent, or — when no operation is
 * durable — its value before the round (the baseline) or any operation sent.
 */
import { NbdClient, NbdConnectionClosedError, TFLAG_CAN_MULTI_CONN } from './nbd-client.ts';

export const BLOCK_BYTES = 4096;
const MAGIC = 0x42524454; // "BRDT"
const HEADER_BYTES = 24;
const ZERO_BLOCK = Buffer.alloc(BLOCK_BYTES);

/** The content of a block as the model sees it: 0 = zeros, otherwise the generation that wrote it. */
export type BlockValue = number;
export const ZEROS: BlockValue = 0;

/** Fills `out` (one block) with the self-describing content of (volume, block, gen). */
export function fillBlock(out: Buffer, runId: number, volume: number, block: number, gen: number): void {
  out.writeUInt32BE(MAGIC, 0);
  out.writeUInt32BE(volume, 4);
  out.writeUInt32BE(block, 8);
  out.writeUInt32BE(gen, 12);
  out.writeUInt32BE(runId, 16);
  out.writeUInt32BE(0, 20);
  // xorshift32 seeded from the header; never all-zero state.
  let x = (Math.imul(volume + 1, 0x9e3779b1) ^ Math.imul(block + 1, 0x85ebca6b) ^ Math.imul(gen, 0xc2b2ae35) ^ runId) >>> 0 || 1;
  for (let at = HEADER_BYTES; at < BLOCK_BYTES; at += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out.writeUInt32BE(x, at);
  }
}

/**
 * Decodes one block read back: ZEROS, a generation, or an error string describing why the
 * block is neither zeros nor a complete block written for (volume, block).
 */
export function decodeBlock(buf: Buffer, runId: number, volume: number, block: number, scratch: Buffer): BlockValue | string {
  if (buf.equals(ZERO_BLOCK)) return ZEROS;
  if (buf.readUInt32BE(0) !== MAGIC) return `no magic (first bytes ${buf.subarray(0, 16).toString('hex')})`;
  const v = buf.readUInt32BE(4);
  const b = buf.readUInt32BE(8);
  const gen = buf.readUInt32BE(12);
  const r = buf.readUInt32BE(16);
  if (v !== volume || b !== block || r !== runId) return `foreign block: header says volume ${v} block ${b} run ${r}`;
  if (gen === 0) return 'generation 0 in a header';
  fillBlock(scratch, runId, volume, block, gen);
  if (!scratch.equals(buf)) {
    let at = 0;
    while (at < BLOCK_BYTES && scratch[at] === buf[at]) at++;
    return `torn block: header says generation ${gen} but bytes differ from offset ${at} in the block`;
  }
  return gen;
}

export interface Op {
  value: BlockValue;
  /** The writer connection (within its volume) that sent it. */
  conn: number;
  acked: boolean;
  durable: boolean;
  kind: 'write' | 'fua-write' | 'trim';
}

/** One write or trim covering consecutive blocks; tracked until durable. */
interface Request {
  ops: Op[];
}

export interface VolumeSpec {
  name: string;
  index: number;
  sizeBytes: number;
}

export interface RoundStats {
  writesSent: number;
  writesAcked: number;
  trimsSent: number;
  flushesCompleted: number;
  durableOps: number;
  /** NBD errors other than the connection closing: none is expected in this workload. */
  unexpectedErrors: string[];
}

export interface WorkloadOptions {
  connectionsPerVolume: number;
  /** Requests in flight per connection. */
  depth: number;
  maxBlocksPerWrite: number;
  fuaProbability: number;
  trimProbability: number;
  /** A flush after this many requests on average. */
  flushEvery: number;
}

/**
 * The state of a pool across rounds: the exact content of every block (verified after each
 * restart) and the generation counter.
 */
export class CrashModel {
  readonly runId: number;
  readonly volumes: readonly VolumeSpec[];
  /** Per volume, per block: the value observed after the last restart. */
  readonly baseline: Uint32Array[];
  private nextGen = 1;
  /** This round: per volume, per block index, the ops in send order. */
  private roundOps: Map<number, Op[]>[] = [];

  constructor(runId: number, volumes: readonly VolumeSpec[]) {
    this.runId = runId;
    this.volumes = volumes;
    this.baseline = volumes.map((v) => new Uint32Array(v.sizeBytes / BLOCK_BYTES));
  }

  beginRound(): void {
    this.roundOps = this.volumes.map(() => new Map());
  }

  /**
   * Records an operation sent to one block this round, as the writers do; public so that the
   * checker can be tested on made-up histories. Returns the op, whose flags the caller updates.
   */
  recordOp(volume: number, block: number, value: BlockValue, kind: Op['kind'], conn = 0): Op {
    const op: Op = { value, conn, acked: false, durable: false, kind };
    this.record(volume, block, op);
    return op;
  }

  /** A fresh generation number (unique in this model). */
  takeGeneration(): number {
    return this.nextGen++;
  }

  private record(volume: number, block: number, op: Op): void {
    const m = this.roundOps[volume]!;
    let list = m.get(block);
    if (!list) m.set(block, (list = []));
    list.push(op);
  }

  /**
   * Runs writers on every volume until their connections die (the engine is killed) or
   * `stop()` is called; resolves when all have ended.
   */
  runWriters(socketPath: string, opts: WorkloadOptions, rand: () => number): { done: Promise<RoundStats>; stop: () => void } {
    const stats: RoundStats = { writesSent: 0, writesAcked: 0, trimsSent: 0, flushesCompleted: 0, durableOps: 0, unexpectedErrors: [] };
    let stopped = false;
    const clients: NbdClient[] = [];
    /** Per volume: requests acknowledged and not yet durable, per connection. */
    const pendingDurable: Set<Request>[][] = this.volumes.map(() => Array.from({ length: opts.connectionsPerVolume }, () => new Set<Request>()));

    const markDurable = (reqs: Iterable<Request>): void => {
      for (const r of reqs) {
        for (const op of r.ops) {
          if (!op.durable) {
            op.durable = true;
            stats.durableOps++;
          }
        }
      }
    };

    const writer = async (vol: VolumeSpec, conn: number): Promise<void> => {
      let client: NbdClient;
      try {
        client = await NbdClient.connect(socketPath, vol.name);
      } catch {
        return; // The engine died before this writer got going.
      }
      clients.push(client);
      if (stopped) client.destroy();
      const multiConn = (client.info.transmissionFlags & TFLAG_CAN_MULTI_CONN) !== 0;
      const blocks = vol.sizeBytes / BLOCK_BYTES;
      // Each connection owns a slice of the volume, so no block is ever in flight twice.
      const lo = Math.floor((blocks * conn) / opts.connectionsPerVolume);
      const hi = Math.floor((blocks * (conn + 1)) / opts.connectionsPerVolume);
      const busy = new Uint8Array(hi - lo);
      const inFlight = new Set<Promise<void>>();

      const track = (p: Promise<void>): void => {
        const q = p.catch((err: unknown) => {
          if (!(err instanceof NbdConnectionClosedError)) {
            stats.unexpectedErrors.push(`${vol.name}: ${err instanceof Error ? err.message : String(err)}`);
          }
        });
        inFlight.add(q);
        void q.finally(() => inFlight.delete(q));
      };

      const issueWriteOrTrim = (): boolean => {
        const n = 1 + Math.floor(rand() * opts.maxBlocksPerWrite);
        const span = Math.min(n, hi - lo);
        const start = lo + Math.floor(rand() * (hi - lo - span + 1));
        for (let b = start; b < start + span; b++) if (busy[b - lo]) return false;
        const trim = rand() < opts.trimProbability;
        const fua = !trim && rand() < opts.fuaProbability;
        const gen = this.nextGen++;
        const req: Request = { ops: [] };
        const data = trim ? null : Buffer.allocUnsafe(span * BLOCK_BYTES);
        for (let i = 0; i < span; i++) {
          const b = start + i;
          busy[b - lo] = 1;
          const op: Op = { value: trim ? ZEROS : gen, conn, acked: false, durable: false, kind: trim ? 'trim' : fua ? 'fua-write' : 'write' };
          req.ops.push(op);
          this.record(vol.index, b, op);
          if (data) fillBlock(data.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES), this.runId, vol.index, b, gen);
        }
        const offset = start * BLOCK_BYTES;
        const p = data ? client.write(offset, data, fua) : client.trim(offset, span * BLOCK_BYTES);
        if (trim) stats.trimsSent++;
        else stats.writesSent++;
        track(
          p.then(
            () => {
              if (!trim) stats.writesAcked++;
              for (const op of req.ops) op.acked = true;
              if (fua) markDurable([req]);
              else pendingDurable[vol.index]![conn]!.add(req);
              for (let b = start; b < start + span; b++) busy[b - lo] = 0;
            },
            (err: unknown) => {
              // Not acknowledged: the block stays "in flight" forever, so it is never reused
              // this round (its fate is unknown to the client).
              throw err;
            },
          ),
        );
        return true;
      };

      const issueFlush = (): void => {
        // Covered: everything acknowledged before the flush is sent.
        const covered: Request[] = [];
        const conns = multiConn ? pendingDurable[vol.index]! : [pendingDurable[vol.index]![conn]!];
        for (const set of conns) {
          for (const r of set) covered.push(r);
        }
        track(
          client.flush().then(() => {
            stats.flushesCompleted++;
            markDurable(covered);
            for (const set of conns) for (const r of covered) set.delete(r);
          }),
        );
      };

      while (!stopped && !client.closed) {
        if (inFlight.size >= opts.depth) {
          await Promise.race(inFlight);
          continue;
        }
        if (rand() < 1 / opts.flushEvery) issueFlush();
        else if (!issueWriteOrTrim()) {
          // Blocks busy: wait for something to complete, if anything is in flight.
          if (inFlight.size > 0) await Promise.race(inFlight);
        }
        // Let replies be processed now and then, so the loop does not starve the socket.
        if (inFlight.size === 0) await new Promise((r) => setImmediate(r));
      }
      await Promise.allSettled([...inFlight]);
      if (!client.closed) await client.disconnect();
    };

    const all: Promise<void>[] = [];
    for (const vol of this.volumes) {
      for (let c = 0; c < opts.connectionsPerVolume; c++) all.push(writer(vol, c));
    }
    const done = Promise.all(all).then(() => stats);
    return {
      done,
      stop: () => {
        stopped = true;
      },
    };
  }

  /**
   * Checks one volume's content (read back after restart) against the model and makes it the
   * new baseline. Returns human-readable violations (empty when all is well).
   */
  checkVolume(volume: number, content: Buffer, maxReports = 20): string[] {
    const vol = this.volumes[volume]!;
    const base = this.baseline[volume]!;
    const ops = this.roundOps[volume]!;
    const scratch = Buffer.alloc(BLOCK_BYTES);
    const problems: string[] = [];
    const observed = new Uint32Array(base.length);
    for (let b = 0; b < base.length; b++) {
      const buf = content.subarray(b * BLOCK_BYTES, (b + 1) * BLOCK_BYTES);
      const got = decodeBlock(buf, this.runId, volume, b, scratch);
      const where = `${vol.name} block ${b} (offset ${b * BLOCK_BYTES})`;
      if (typeof got === 'string') {
        const hint = got.startsWith('no magic') ? shiftHint(content, b, this.runId) : '';
        problems.push(`${where}: ${got}${hint}; baseline ${base[b]}; ops this round: ${historyOf(ops.get(b))}`);
        continue;
      }
      observed[b] = got;
      const list = ops.get(b) ?? [];
      let lastDurable = -1;
      list.forEach((op, i) => {
        if (op.durable) lastDurable = i;
      });
      const candidates: BlockValue[] = [];
      if (lastDurable < 0) candidates.push(base[b]!);
      for (let i = Math.max(lastDurable, 0); i < list.length; i++) candidates.push(list[i]!.value);
      if (!candidates.includes(got)) {
        // Values the block legitimately held before its last durable operation.
        const superseded = [base[b]!, ...list.slice(0, Math.max(lastDurable, 0)).map((op) => op.value)];
        const kind =
          lastDurable >= 0 && superseded.includes(got)
            ? `holds ${got === ZEROS ? 'zeros' : `generation ${got}`}, older than the last durable operation (a flushed write was lost)`
            : got === ZEROS
              ? 'reads zeros, which it never held and no trim was sent for'
              : got < base[b]!
                ? `holds generation ${got}, an older write from an earlier round (reverted from ${base[b]})`
                : `holds generation ${got}, which was never sent for this block`;
        problems.push(`${where}: ${kind}; baseline ${base[b]}; ops this round: ${historyOf(list)}`);
      }
    }
    base.set(observed);
    return problems.slice(0, maxReports).concat(problems.length > maxReports ? [`... and ${problems.length - maxReports} more`] : []);
  }
}

function historyOf(list: readonly Op[] | undefined): string {
  if (!list || list.length === 0) return '(none)';
  return list.map((op) => `${op.kind}:${op.value}${op.acked ? '+ack' : ''}${op.durable ? '+durable' : ''}`).join(' ');
}

/**
 * For a block without a header: is a header of ours nearby, i.e. is the data displaced? Names
 * the displacement, which tells a read/write offset error from garbage.
 */
function shiftHint(content: Buffer, block: number, runId: number): string {
  const magic = Buffer.alloc(4);
  magic.writeUInt32BE(MAGIC, 0);
  const start = block * BLOCK_BYTES;
  const from = Math.max(0, start - BLOCK_BYTES + 1);
  const to = Math.min(content.length, start + BLOCK_BYTES);
  for (let at = content.indexOf(magic, from); at >= 0 && at < to; at = content.indexOf(magic, at + 1)) {
    if (at + HEADER_BYTES > content.length || content.readUInt32BE(at + 16) !== runId) continue;
    const v = content.readUInt32BE(at + 4);
    const b = content.readUInt32BE(at + 8);
    const g = content.readUInt32BE(at + 12);
    return ` (a header for volume ${v} block ${b} generation ${g} sits ${at - start} bytes from this block's start: displaced data)`;
  }
  return ' (no header of this run within one block either way: garbage or foreign data)';
}
