/**
 * What every boot of the test guest shares: QEMU, the kernel, the cached base initramfs, a
 * work directory for per-boot initrds and one console log for the whole file. `boot` starts a
 * guest with a scenario script on a Braid export; `finish` waits for it to power off and
 * turns a failed script, a missing marker or a crash into an error with the console's tail.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { baseInitramfs, writeBootInitrd } from './guest-initramfs.ts';
import { findGuestKernel, requireQemuSystem } from './guest-kernel.ts';
import type { GuestKernel } from './guest-kernel.ts';
import { QemuGuest } from './qemu-guest.ts';

export interface BootTiming {
  name: string;
  /** Host milliseconds from QEMU's start to the guest's /init reporting the disk present. */
  upMs: number;
  /** The guest kernel's own uptime at that point, in seconds. */
  guestUptimeS: number;
  /** Host milliseconds from QEMU's start to its exit. */
  totalMs: number;
}

export class GuestLab {
  readonly qemu: string;
  readonly kernel: GuestKernel;
  readonly baseInitrd: string;
  readonly workDir: string;
  readonly consoleLog: string;
  readonly timings: BootTiming[] = [];
  private boots = 0;

  private constructor(workDir: string, consoleLog: string) {
    this.qemu = requireQemuSystem();
    this.kernel = findGuestKernel();
    const base = baseInitramfs(this.kernel);
    this.baseInitrd = base.path;
    this.workDir = workDir;
    this.consoleLog = consoleLog;
    console.log(
      `[e2e] kernel ${this.kernel.version}; initramfs ${base.path} (${base.cached ? 'cached' : 'built'} in ${base.ms} ms); ` +
        `console log ${this.consoleLog}`,
    );
  }

  /**
   * Throws (with how to fix it) when QEMU, the kernel or a static busybox is missing. The
   * console log goes to `consoleLog`, else into `workDir` (removed with it after the run).
   */
  static create(workDir: string, consoleLog = join(workDir, 'console.log')): GuestLab {
    return new GuestLab(workDir, consoleLog);
  }

  /** The last lines of the console log (every boot's console, kernel messages included). */
  consoleTail(lines = 80): string {
    try {
      return readFileSync(this.consoleLog, 'utf8').split('\n').slice(-lines - 1).join('\n');
    } catch {
      return '(no console log)';
    }
  }

  boot(name: string, nbdSocket: string, exportName: string, script: string, reconnectDelaySec = 30): QemuGuest {
    const initrd = join(this.workDir, `initrd-${++this.boots}.img`);
    writeBootInitrd(this.baseInitrd, script, initrd);
    return QemuGuest.boot({
      name,
      qemu: this.qemu,
      kernel: this.kernel,
      initrd,
      nbdSocket,
      exportName,
      reconnectDelaySec,
      consoleLog: this.consoleLog,
    });
  }

  /** Waits for DONE and a clean power-off; checks the script's exit status and FAIL markers. */
  async finish(guest: QemuGuest, timeoutMs: number): Promise<BootTiming> {
    const up = await guest.waitMarker('UP', timeoutMs);
    await guest.waitMarker('DONE', Math.max(1, timeoutMs - up.atMs));
    const status = await guest.waitExit(30_000);
    const exit = guest.markers.find((m) => m.word === 'EXIT');
    if (exit?.args[0] !== '0') throw new Error(`${guest.name}: scenario exited with ${exit?.args[0] ?? '(no EXIT marker)'}\n${guest.consoleTail()}`);
    const failures = guest.failures();
    if (failures.length > 0) throw new Error(`${guest.name}: ${failures.map((f) => f.args.join(' ')).join('; ')}\n${guest.consoleTail()}`);
    if (status.code !== 0) throw new Error(`${guest.name}: QEMU exited with ${JSON.stringify(status)}\n${guest.consoleTail()}`);
    const timing: BootTiming = { name: guest.name, upMs: up.atMs, guestUptimeS: Number(up.args[0]), totalMs: Date.now() - guest.started };
    this.timings.push(timing);
    console.log(`[e2e] ${timing.name}: disk up after ${timing.upMs} ms (guest uptime ${timing.guestUptimeS} s), powered off after ${timing.totalMs} ms`);
    return timing;
  }
}
