/**
 * One QEMU guest under software emulation (TCG: no KVM on CI machines) whose only disk is a
 * Braid export reached over NBD, with its serial console on QEMU's stdio: the host reads the
 * guest's markers ("BRAID-GUEST WORD args...") from QEMU's stdout and can type lines into the
 * guest's console through QEMU's stdin.
 *
 * The disk is `-blockdev driver=nbd` with a reconnect delay, so a restart of the engine within
 * that delay pauses the guest's I/O instead of failing it; `virtio-blk-pci` with
 * `write-cache=on` tells the guest its disk has a volatile write cache, so the guest's kernel
 * sends a FLUSH for every fsync/sync and journal commit and QEMU forwards each one as an NBD
 * FLUSH (this is cache=none / cache=writeback as seen by the guest; cache.direct only changes
 * host page cache use, which an NBD node has none of). With write-cache=off (writethrough)
 * QEMU would flush after every write by itself and the guest's own ordering would go untested;
 * cache=unsafe would drop the flushes altogether.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createWriteStream } from 'node:fs';
import type { WriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { MARKER } from './guest-initramfs.ts';
import type { GuestKernel } from './guest-kernel.ts';

export interface GuestOptions {
  /** For messages: which boot this is. */
  name: string;
  qemu: string;
  kernel: GuestKernel;
  initrd: string;
  nbdSocket: string;
  exportName: string;
  /** Seconds QEMU holds the guest's requests while it reconnects to a lost NBD server. */
  reconnectDelaySec: number;
  /** The whole console (kernel messages included) is copied here. */
  consoleLog: string;
}

export interface Marker {
  word: string;
  args: string[];
  /** Milliseconds since QEMU was started, when the host read the line. */
  atMs: number;
  /** Host clock (Date.now()) when the host read the line. */
  at: number;
}

export interface GuestExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const live = new Set<QemuGuest>();

// A test worker torn down without its afterAll must not leave emulators running.
process.once('exit', () => {
  for (const g of live) g.kill();
});

/** QEMU's option syntax: a comma inside a value is written twice. */
function optValue(v: string): string {
  return v.replace(/,/g, ',,');
}

export class QemuGuest {
  readonly name: string;
  readonly started = Date.now();
  readonly markers: Marker[] = [];
  readonly exited: Promise<GuestExit>;
  private readonly proc: ChildProcess;
  private readonly events = new EventEmitter();
  private readonly consoleLines: string[] = [];
  private readonly log: WriteStream;
  private exitStatus: GuestExit | null = null;
  private stderr = '';

  private constructor(opts: GuestOptions) {
    this.name = opts.name;
    const blockdev = [
      'driver=nbd',
      'server.type=unix',
      `server.path=${optValue(opts.nbdSocket)}`,
      `export=${optValue(opts.exportName)}`,
      'node-name=braid0',
      `reconnect-delay=${opts.reconnectDelaySec}`,
      'cache.direct=on',
    ].join(',');
    const args = [
      '-accel', 'tcg',
      '-nodefaults', '-no-user-config',
      '-display', 'none', '-serial', 'stdio', '-no-reboot',
      '-m', '256', '-smp', '1',
      '-kernel', opts.kernel.image,
      '-initrd', opts.initrd,
      // quiet + loglevel=3: the console carries our markers and the kernel's errors (I/O errors
      // on vda, ext4 complaints), not the boot chatter. panic=-1 + -no-reboot: a dead /init
      // ends QEMU instead of hanging it.
      '-append', 'console=ttyS0 quiet loglevel=3 panic=-1',
      '-blockdev', blockdev,
      '-device', 'virtio-blk-pci,drive=braid0,write-cache=on',
    ];
    this.log = createWriteStream(opts.consoleLog, { flags: 'a' });
    this.log.write(`=== ${opts.name}: ${opts.qemu} ${args.join(' ')}\n`);
    this.proc = spawn(opts.qemu, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    live.add(this);
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (chunk: string) => {
      this.stderr += chunk;
      this.log.write(`[qemu stderr] ${chunk}`);
    });
    // Typed lines may race with QEMU's exit; a closed pipe is not the test's failure.
    this.proc.stdin!.on('error', () => {});
    const lines = createInterface({ input: this.proc.stdout! });
    lines.on('line', (raw) => this.onLine(raw));
    // 'close' comes after the exit and after stdout ended, so every console line has been seen.
    this.exited = new Promise((resolve) => {
      this.proc.once('close', (code, signal) => {
        live.delete(this);
        this.exitStatus = { code, signal };
        this.log.end(`=== ${opts.name}: exit code ${code} signal ${signal}\n`);
        this.events.emit('exit');
        resolve({ code, signal });
      });
    });
  }

  static boot(opts: GuestOptions): QemuGuest {
    return new QemuGuest(opts);
  }

  private onLine(raw: string): void {
    const line = raw.replace(/\r$/, '');
    this.consoleLines.push(line);
    if (this.consoleLines.length > 400) this.consoleLines.splice(0, 200);
    this.log.write(`${line}\n`);
    // A kernel message may share the line; the marker is wherever the prefix is.
    const at = line.indexOf(`${MARKER} `);
    if (at < 0) return;
    const [word, ...args] = line.slice(at + MARKER.length + 1).trim().split(/\s+/);
    if (!word) return;
    const now = Date.now();
    const marker: Marker = { word, args, atMs: now - this.started, at: now };
    this.markers.push(marker);
    this.events.emit('marker', marker);
  }

  /** The last console lines and QEMU's stderr, for error messages. */
  consoleTail(n = 40): string {
    const err = this.stderr.trim();
    return `${this.consoleLines.slice(-n).join('\n')}${err ? `\n[qemu stderr] ${err.slice(-2000)}` : ''}`;
  }

  /**
   * Resolves with the first marker `word` (matching `accept`) at or after index `from` of
   * `markers`; rejects if the guest exits first or `timeoutMs` passes.
   */
  waitMarker(word: string, timeoutMs: number, accept: (m: Marker) => boolean = () => true, from = 0): Promise<Marker> {
    const seen = this.markers.slice(from).find((m) => m.word === word && accept(m));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.events.off('marker', onMarker);
        this.events.off('exit', onExit);
      };
      const onMarker = (m: Marker): void => {
        if (m.word !== word || !accept(m)) return;
        done();
        resolve(m);
      };
      const onExit = (): void => {
        done();
        reject(new Error(`${this.name}: QEMU exited (${JSON.stringify(this.exitStatus)}) before marker ${word}\n${this.consoleTail()}`));
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: no marker ${word} within ${timeoutMs} ms\n${this.consoleTail()}`));
      }, timeoutMs);
      this.events.on('marker', onMarker);
      if (this.exitStatus) onExit();
      else this.events.on('exit', onExit);
    });
  }

  /** Types a line on the guest's serial console. */
  send(line: string): void {
    this.proc.stdin!.write(`${line}\n`);
  }

  /** Waits for QEMU to exit by itself (the guest powered off); kills it after `timeoutMs`. */
  async waitExit(timeoutMs: number): Promise<GuestExit> {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.kill();
    }, timeoutMs);
    try {
      const status = await this.exited;
      if (timedOut) throw new Error(`${this.name}: guest did not power off within ${timeoutMs} ms\n${this.consoleTail()}`);
      return status;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Markers the guest printed to say something went wrong. */
  failures(): Marker[] {
    return this.markers.filter((m) => m.word === 'FAIL');
  }

  kill(): void {
    if (this.exitStatus === null && this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

/** Kills every guest still running (for afterAll). */
export async function killAllGuests(): Promise<void> {
  const guests = [...live];
  for (const g of guests) g.kill();
  await Promise.all(guests.map((g) => g.exited));
}
