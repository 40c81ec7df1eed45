/**
 * The mount table of our mount namespace, from /proc/self/mountinfo (proc(5)):
 *
 *   36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
 *   (1)(2) (3)   (4)   (5)         (6)       (7...)  -  (8)    (9)      (10)
 *
 * Read directly rather than through findmnt: it is one file read, and it is what the kernel
 * itself says. Paths escape space, tab, newline and backslash as \040 \011 \012 \134.
 *
 * The table is per mount namespace: a CSI node plugin must run in the host's mount namespace
 * (or with Bidirectional propagation on the paths it uses) for these answers to hold.
 */
import { readFile } from 'node:fs/promises';

export interface MountEntry {
  mountId: number;
  parentId: number;
  /** The st_dev of the mounted filesystem, as "major:minor". */
  majorMinor: string;
  /** The path inside that filesystem that is mounted here ("/" unless a bind mount). */
  root: string;
  mountPoint: string;
  mountOptions: string;
  fsType: string;
  source: string;
  superOptions: string;
}

export const MOUNTINFO_PATH = '/proc/self/mountinfo';

export async function readMountTable(path: string = MOUNTINFO_PATH): Promise<MountEntry[]> {
  return parseMountInfo(await readFile(path, 'utf8'));
}

export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const entry = parseLine(line);
    if (entry) entries.push(entry);
  }
  return entries;
}

function parseLine(line: string): MountEntry | undefined {
  const fields = line.split(' ');
  // Optional fields (7...) end at a lone "-"; the three fields after it are fixed.
  const dash = fields.indexOf('-', 6);
  if (dash < 0 || fields.length < dash + 4) return undefined;
  const [mountId, parentId, majorMinor, root, mountPoint, mountOptions] = fields;
  if (mountId === undefined || parentId === undefined || majorMinor === undefined) return undefined;
  if (root === undefined || mountPoint === undefined || mountOptions === undefined) return undefined;
  return {
    mountId: Number(mountId),
    parentId: Number(parentId),
    majorMinor,
    root: unescapeOctal(root),
    mountPoint: unescapeOctal(mountPoint),
    mountOptions,
    fsType: fields[dash + 1] ?? '',
    source: unescapeOctal(fields[dash + 2] ?? ''),
    superOptions: fields[dash + 3] ?? '',
  };
}

/** The kernel's \NNN octal escapes (show_mountinfo → seq_path / mangle). */
export function unescapeOctal(text: string): string {
  return text.replace(/\\([0-7]{3})/g, (_m, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** The mounts at `mountPoint` (an absolute, symlink-free path), the topmost last. */
export function mountsAt(table: readonly MountEntry[], mountPoint: string): MountEntry[] {
  return table.filter((e) => e.mountPoint === mountPoint);
}
