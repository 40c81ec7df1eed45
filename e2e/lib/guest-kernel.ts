/**
 * Finds the kernel the test guest boots: Debian's `linux-image-amd64`, installed by
 * hack/install-test-deps.sh, as /boot/vmlinuz-VERSION with its modules in /lib/modules/VERSION.
 * A machine without one is a broken test machine, not a reason to skip: the error says how to
 * fix it.
 */
import { accessSync, constants, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export interface GuestKernel {
  version: string;
  image: string;
  modulesDir: string;
}

const INSTALL_HINT = 'run `bash hack/install-test-deps.sh` (it installs linux-image-amd64, qemu-system-x86 and busybox-static)';

/** Compares "6.1.0-56-amd64" style versions part by part, numbers as numbers. */
function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const nx = Number(x);
    const ny = Number(y);
    const c = Number.isInteger(nx) && Number.isInteger(ny) && x !== '' && y !== '' ? nx - ny : x.localeCompare(y);
    if (c !== 0) return c;
  }
  return 0;
}

/** The newest /boot/vmlinuz-* that is readable and has a modules directory with modules.dep. */
export function findGuestKernel(bootDir = '/boot', modulesRoot = '/lib/modules'): GuestKernel {
  let names: string[];
  try {
    names = readdirSync(bootDir);
  } catch {
    names = [];
  }
  const candidates = names
    .filter((n) => n.startsWith('vmlinuz-'))
    .map((n) => n.slice('vmlinuz-'.length))
    .filter((v) => existsSync(join(modulesRoot, v, 'modules.dep')))
    .sort(compareVersions);
  const version = candidates.at(-1);
  if (version === undefined) {
    throw new Error(`no guest kernel: no ${bootDir}/vmlinuz-* with ${modulesRoot}/VERSION/modules.dep; ${INSTALL_HINT}`);
  }
  const image = join(bootDir, `vmlinuz-${version}`);
  try {
    accessSync(image, constants.R_OK);
  } catch {
    throw new Error(`guest kernel ${image} is not readable by this user (Ubuntu makes it 0600); run the test as root or chmod it`);
  }
  return { version, image, modulesDir: join(modulesRoot, version) };
}

/** Throws a clear error unless `qemu-system-x86_64` is on PATH. */
export function requireQemuSystem(): string {
  for (const dir of (process.env['PATH'] ?? '').split(':')) {
    if (dir === '') continue;
    const candidate = join(dir, 'qemu-system-x86_64');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory.
    }
  }
  throw new Error(`qemu-system-x86_64 is not installed; ${INSTALL_HINT}`);
}
