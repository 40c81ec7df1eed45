/**
 * The shell scripts the test guest runs as /scenario.sh (busybox sh, `sh -e`), and the parsers
 * for what they print. Every line meant for the host starts with the marker prefix; everything
 * else on the console is the kernel's or a tool's own output, kept for the log only.
 *
 * The filesystem is ext4 as mke2fs makes it by default (journal, metadata checksums), mounted
 * with default options (data=ordered, barriers on), so the guest kernel issues the flushes a
 * real VM's root filesystem issues (its FUA writes too, which the block layer turns into
 * write + flush on virtio-blk, a device without FUA).
 */
import { MARKER } from './guest-initramfs.ts';
import type { Marker } from './qemu-guest.ts';

export const DATA_DIR = '/mnt/data';

export interface FileSpec {
  name: string;
  bytes: number;
}

export interface FileSum {
  name: string;
  sha256: string;
}

const MKFS_AND_MOUNT = `
# Inode tables and journal zeroed now, so no background initialisation writes later.
/sbin/mke2fs -q -F -t ext4 -E lazy_itable_init=0,lazy_journal_init=0 /dev/vda
echo "${MARKER} MKFS $(cut -d' ' -f1 /proc/uptime)"
mount -t ext4 /dev/vda /mnt
mkdir -p ${DATA_DIR}
`;

function assertSafeName(name: string): string {
  if (!/^[a-z0-9][a-z0-9._-]*$/.test(name)) throw new Error(`unsafe guest file name ${JSON.stringify(name)}`);
  return name;
}

/** Scenario A, first boot: make the filesystem, write `files` of random data, print their sums. */
export function formatAndWriteScript(files: readonly FileSpec[]): string {
  const writes = files
    .map((f) => {
      const name = assertSafeName(f.name);
      return `head -c ${f.bytes} /dev/urandom > ${DATA_DIR}/${name}
echo "${MARKER} FILE ${name} $(sha256sum ${DATA_DIR}/${name} | cut -d' ' -f1)"`;
    })
    .join('\n');
  return `${MKFS_AND_MOUNT}
${writes}
sync
umount /mnt
echo "${MARKER} DONE"
`;
}

/**
 * Checks the filesystem (read-only e2fsck, after a mount/umount cycle so a journal left by a
 * crash has been replayed), then every expected file's sum, printing "JOURNAL needs-replay" |
 * "JOURNAL clean", "FSCK rc", then "VERIFY name OK" | "VERIFY name BAD actual" |
 * "VERIFY name MISSING".
 */
function verifyPart(expected: readonly FileSum[]): string {
  const list = expected.map((f) => `${assertSafeName(f.name)} ${f.sha256}`).join('\n');
  return `if /sbin/e2fsck -n /dev/vda 2>&1 | grep -q 'skipping journal recovery'; then
  echo "${MARKER} JOURNAL needs-replay"
else
  echo "${MARKER} JOURNAL clean"
fi
if mount -t ext4 /dev/vda /mnt; then umount /mnt; else echo "${MARKER} FAIL mount (journal replay)"; fi
rc=0
/sbin/e2fsck -fn /dev/vda > /tmp/fsck.out 2>&1 || rc=$?
echo "${MARKER} FSCK $rc"
[ "$rc" = 0 ] || sed 's/^/fsck: /' /tmp/fsck.out | head -40
mount -t ext4 /dev/vda /mnt || { echo "${MARKER} FAIL mount"; exit 1; }
while read -r name sum; do
  if [ ! -f ${DATA_DIR}/$name ]; then
    echo "${MARKER} VERIFY $name MISSING"
  else
    got=$(sha256sum ${DATA_DIR}/$name | cut -d' ' -f1)
    if [ "$got" = "$sum" ]; then echo "${MARKER} VERIFY $name OK"; else echo "${MARKER} VERIFY $name BAD $got"; fi
  fi
done <<'EXPECTED'
${list}
EXPECTED
`;
}

/** A fresh boot that checks a volume: fsck, every expected file, then unmounts. */
export function verifyScript(expected: readonly FileSum[]): string {
  return `${verifyPart(expected)}
umount /mnt
echo "${MARKER} DONE"
`;
}

/**
 * Scenario A, second boot (on the clone): verify, then change the clone (a new file, an
 * overwritten file, a deleted file) so that it must diverge from its snapshot.
 */
export function verifyThenChangeScript(expected: readonly FileSum[], overwrite: string, remove: string): string {
  return `${verifyPart(expected)}
head -c 300000 /dev/urandom > ${DATA_DIR}/clone-only
dd if=/dev/urandom of=${DATA_DIR}/${assertSafeName(overwrite)} bs=4k count=16 conv=notrunc,fsync 2>/dev/null
rm ${DATA_DIR}/${assertSafeName(remove)}
sync
umount /mnt
echo "${MARKER} DONE"
`;
}

/**
 * Scenario B, the writer: files of random size (up to ~260 KiB, not block-aligned), each
 * made in tmpfs and summed first, copied with an fsync, then `sync`, then announced as
 * "SYNCED name sum phase". Between files it looks whether the host has typed "PHASE2";
 * after it, `phase2Files` more files, then a read-back of every file with the page cache
 * dropped ("CHECK name sum": what the disk returns now), and a clean unmount.
 */
export function writerScript(phase2Files: number, maxFiles = 400): string {
  return `${MKFS_AND_MOUNT}
# No echo of what the host types: the kernel would insert it into whatever line is being
# printed, markers included.
stty -echo || true
# A blocking reader in the background catches the host's PHASE2 line (a timed \`read -t\`
# between files missed it in some runs). A background job of a non-interactive shell reads
# /dev/null unless told otherwise, hence the explicit /dev/console.
( while read -r line; do [ "$line" = PHASE2 ] && { : > /tmp/phase2; break; }; done ) < /dev/console &
echo "${MARKER} READY"
i=0
phase=1
n2=0
while [ $i -lt ${maxFiles} ]; do
  i=$((i + 1))
  name=$(printf 'b%04d' $i)
  head -c $(( (RANDOM % 64) * 4096 + RANDOM % 4096 + 1 )) /dev/urandom > /tmp/$name
  sum=$(sha256sum /tmp/$name | cut -d' ' -f1)
  echo "${MARKER} BEGIN $name $phase"
  dd if=/tmp/$name of=${DATA_DIR}/$name bs=64k conv=fsync 2>/dev/null
  sync
  rm /tmp/$name
  echo "${MARKER} SYNCED $name $sum $phase"
  if [ $phase = 2 ]; then
    n2=$((n2 + 1))
    [ $n2 -lt ${phase2Files} ] || break
  elif [ -e /tmp/phase2 ]; then
    phase=2
    echo "${MARKER} PHASE2"
  fi
done
sync
echo 3 > /proc/sys/vm/drop_caches
for f in ${DATA_DIR}/*; do
  echo "${MARKER} CHECK $(basename $f) $(sha256sum $f | cut -d' ' -f1)"
done
umount /mnt
echo "${MARKER} DONE"
`;
}

// ---- Reading the markers back ------------------------------------------------------------

export type Verdict = 'OK' | 'BAD' | 'MISSING';

/** VERIFY markers → name → verdict (and the sum found, for BAD). */
export function verifyResults(markers: readonly Marker[]): Map<string, { verdict: Verdict; got?: string }> {
  const out = new Map<string, { verdict: Verdict; got?: string }>();
  for (const m of markers) {
    if (m.word !== 'VERIFY') continue;
    const [name, verdict, got] = m.args;
    if (!name || (verdict !== 'OK' && verdict !== 'BAD' && verdict !== 'MISSING')) throw new Error(`bad VERIFY marker: ${m.args.join(' ')}`);
    out.set(name, got === undefined ? { verdict } : { verdict, got });
  }
  return out;
}

/** What the JOURNAL marker said before the first mount: "needs-replay" or "clean". */
export function journalState(markers: readonly Marker[]): string {
  return markers.find((x) => x.word === 'JOURNAL')?.args[0] ?? 'unknown';
}

/** The FSCK marker's exit code (e2fsck: 0 clean, 4 errors left uncorrected with -n). */
export function fsckCode(markers: readonly Marker[]): number | null {
  const m = markers.find((x) => x.word === 'FSCK');
  return m?.args[0] === undefined ? null : Number(m.args[0]);
}
