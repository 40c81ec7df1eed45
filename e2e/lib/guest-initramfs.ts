/**
 * The test guest's initramfs, built at run time from what the machine has installed: a static
 * busybox (the shell and every small tool), the kernel modules for a virtio disk and ext4
 * (resolved through modules.dep), and the host's own mke2fs and e2fsck with their shared
 * libraries (busybox's mke2fs makes only ext2, and ext4 with its journal and checksums is what
 * a VM's root disk really is). Its /init mounts the usual pseudo filesystems, loads the
 * modules, waits for /dev/vda, runs /scenario.sh and powers off, printing markers on the serial
 * console that the host parses (see qemu-guest.ts).
 *
 * The base archive is cached in the temporary directory, keyed by the kernel version and a
 * digest of everything that went into it; each boot appends a small uncompressed archive that
 * holds only its /scenario.sh (the kernel unpacks concatenated archives in order).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { gunzipSync, gzipSync, zstdDecompressSync } from 'node:zlib';
import { buildCpioNewc } from './cpio-newc.ts';
import type { CpioEntry } from './cpio-newc.ts';
import type { GuestKernel } from './guest-kernel.ts';
import { moduleLoadOrder, moduleName } from './kernel-modules.ts';

/** Marker prefix of every line the guest prints for the host. */
export const MARKER = 'BRAID-GUEST';

/** virtio_pci + virtio_blk for the disk, ext4 for the filesystem, crc32c for its checksums. */
const WANTED_MODULES = ['virtio_pci', 'virtio_blk', 'crc32c_generic', 'ext4'];
const BUSYBOX = '/bin/busybox';
const HOST_PROGRAMS = ['/sbin/mke2fs', '/sbin/e2fsck'];
const HOST_FILES = ['/etc/mke2fs.conf'];

const INIT = `#!/bin/busybox sh
# PID 1 of Braid's test guest: set up, run /scenario.sh, power off. Markers go to the console.
/bin/busybox --install -s /bin
# /sbin first: the host's mke2fs and e2fsck, not busybox's (ext2 only).
export PATH=/sbin:/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=96m tmpfs /tmp
while read -r m; do
  insmod "/lib/modules/$m" || echo "${MARKER} FAIL insmod $m"
done < /etc/modules.order
n=0
while [ ! -b /dev/vda ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
echo "${MARKER} UP $(cut -d' ' -f1 /proc/uptime)"
if [ -b /dev/vda ]; then
  sh -e /scenario.sh
  rc=$?
else
  echo "${MARKER} FAIL no /dev/vda"
  rc=99
fi
echo "${MARKER} EXIT $rc"
sync
poweroff -f
`;

/** True if the ELF file at `path` has a PT_INTERP program header (needs a dynamic loader). */
export function isDynamicElf(path: string): boolean {
  const elf = readFileSync(path);
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2) throw new Error(`${path} is not a 64-bit ELF file`);
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) if (elf.readUInt32LE(phoff + i * phentsize) === PT_INTERP) return true;
  return false;
}

/** The shared libraries (and the loader) a host program needs, as ldd names them. */
function sharedLibraries(program: string): string[] {
  const out = execFileSync('ldd', [program], { encoding: 'utf8' });
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m?.[1]) libs.push(m[1]);
    else if (/not found/.test(line)) throw new Error(`ldd ${program}: ${line.trim()}`);
  }
  return libs;
}

/** A module file's bytes, decompressed: busybox insmod takes plain ELF objects. */
function moduleBytes(path: string): Buffer {
  const data = readFileSync(path);
  if (path.endsWith('.ko')) return data;
  if (path.endsWith('.ko.gz')) return gunzipSync(data);
  if (path.endsWith('.ko.zst')) return zstdDecompressSync(data);
  throw new Error(`kernel module ${path}: compression not supported by the test's initramfs builder`);
}

/** Every directory on the way to `path`, outermost first ("/a/b/c" → "a", "a/b"). */
function parents(path: string): string[] {
  const parts = path.replace(/^\/+/, '').split('/').slice(0, -1);
  return parts.map((_, i) => parts.slice(0, i + 1).join('/'));
}

interface Recipe {
  entries: CpioEntry[];
  /** What the archive's content depends on, for the cache key. */
  fingerprint: string;
}

function recipe(kernel: GuestKernel): Recipe {
  if (isDynamicElf(BUSYBOX)) {
    throw new Error(`${BUSYBOX} is dynamically linked; the guest needs Debian's busybox-static (run \`bash hack/install-test-deps.sh\`)`);
  }
  const builtin = new Set(
    readFileSync(join(kernel.modulesDir, 'modules.builtin'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map(moduleName),
  );
  const modulePaths = moduleLoadOrder(
    readFileSync(join(kernel.modulesDir, 'modules.dep'), 'utf8'),
    WANTED_MODULES.filter((m) => !builtin.has(m)),
  );
  const files = new Map<string, { source: string; mode: number; data: () => Buffer }>();
  files.set('/bin/busybox', { source: BUSYBOX, mode: 0o755, data: () => readFileSync(BUSYBOX) });
  for (const program of HOST_PROGRAMS) {
    files.set(program, { source: program, mode: 0o755, data: () => readFileSync(program) });
    for (const lib of sharedLibraries(program)) files.set(lib, { source: lib, mode: 0o755, data: () => readFileSync(lib) });
  }
  for (const f of HOST_FILES) files.set(f, { source: f, mode: 0o644, data: () => readFileSync(f) });
  const moduleOrder: string[] = [];
  for (const rel of modulePaths) {
    const name = basename(rel).replace(/\.(xz|gz|zst)$/, '');
    const source = join(kernel.modulesDir, rel);
    moduleOrder.push(name);
    files.set(`/lib/modules/${name}`, { source, mode: 0o644, data: () => moduleBytes(source) });
  }
  const order = `${moduleOrder.join('\n')}\n`;

  const dirs = new Set<string>(['bin', 'sbin', 'dev', 'proc', 'sys', 'tmp', 'mnt', 'etc', 'lib', 'lib/modules']);
  for (const path of files.keys()) for (const d of parents(path)) dirs.add(d);
  const fingerprint = [
    kernel.version,
    INIT,
    order,
    ...[...files].map(([path, f]) => {
      const st = statSync(f.source);
      return `${path} ${f.source} ${st.size} ${st.mtimeMs}`;
    }),
  ].join('\n');

  const entries: CpioEntry[] = [];
  for (const d of [...dirs].sort()) entries.push({ kind: 'dir', path: d });
  // The kernel opens /dev/console for PID 1 before /init can mount devtmpfs.
  entries.push({ kind: 'chardev', path: 'dev/console', major: 5, minor: 1 });
  entries.push({ kind: 'chardev', path: 'dev/null', major: 1, minor: 3, mode: 0o666 });
  entries.push({ kind: 'symlink', path: 'etc/mtab', target: '/proc/mounts' });
  entries.push({ kind: 'file', path: 'etc/modules.order', data: Buffer.from(order) });
  entries.push({ kind: 'file', path: 'init', data: Buffer.from(INIT), mode: 0o755 });
  for (const [path, f] of files) entries.push({ kind: 'file', path, data: f.data(), mode: f.mode });
  return { entries, fingerprint };
}

/**
 * Path of the gzip'd base archive for `kernel`, built unless a cached copy with the same
 * fingerprint exists. Returns how long it took and whether the cache answered.
 */
export function baseInitramfs(kernel: GuestKernel, cacheDir = tmpdir()): { path: string; cached: boolean; ms: number } {
  const started = Date.now();
  const r = recipe(kernel);
  const digest = createHash('sha256').update(r.fingerprint).digest('hex').slice(0, 16);
  const path = join(cacheDir, `braid-e2e-initramfs-${kernel.version}-${digest}.cpio.gz`);
  try {
    if (statSync(path).size > 0) return { path, cached: true, ms: Date.now() - started };
  } catch {
    // Not built yet.
  }
  // Write aside and rename, so a concurrent run never boots a half-written file.
  const partial = `${path}.${process.pid}.partial`;
  writeFileSync(partial, gzipSync(buildCpioNewc(r.entries), { level: 6 }));
  renameSync(partial, path);
  // Archives built from an older recipe or kernel will not be asked for again.
  for (const name of readdirSync(cacheDir)) {
    if (name.startsWith('braid-e2e-initramfs-') && name.endsWith('.cpio.gz') && join(cacheDir, name) !== path) {
      rmSync(join(cacheDir, name), { force: true });
    }
  }
  return { path, cached: false, ms: Date.now() - started };
}

/**
 * Writes `out`: the base archive, zero padding to a multiple of 4 (the kernel looks for the
 * next archive's header at such an offset), then an uncompressed archive with /scenario.sh.
 */
export function writeBootInitrd(basePath: string, scenario: string, out: string): void {
  const base = readFileSync(basePath);
  const pad = Buffer.alloc((4 - (base.length % 4)) % 4);
  const extra = buildCpioNewc([{ kind: 'file', path: 'scenario.sh', data: Buffer.from(scenario), mode: 0o755 }]);
  writeFileSync(out, Buffer.concat([base, pad, extra]));
}
