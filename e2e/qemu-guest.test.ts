/**
 * A real Linux guest (Debian's kernel under QEMU's software emulation) whose virtio disk is a
 * Braid volume served over NBD by a real `braid serve`. What a VM does to its root disk —
 * mkfs.ext4, journal commits, fsync, the FLUSHes of the guest's block layer — reaches the
 * engine exactly as QEMU sends it.
 *
 * A: files written in a guest survive snapshot + clone: a guest booted on the clone finds every
 *    checksum, and its writes to the clone leave the original and the snapshot untouched.
 * B: the engine is killed with SIGKILL while a guest writes and fsyncs, and restarted on the
 *    same pool within QEMU's reconnect delay. The pool as the kill left it (copied aside before
 *    the restart) must hold a consistent ext4 with every file the guest had announced as synced
 *    before the kill; the live guest must carry on, and what it writes and syncs afterwards must
 *    be on disk too (checked in the guest with the page cache dropped, and by a fresh boot after
 *    a second kill -9). Files announced only after the kill (but before the host's PHASE2) are
 *    reported, not asserted: QEMU does not re-send writes the dead engine had acknowledged but
 *    not flushed, so the guest's later FLUSH cannot cover them (see e2e/README.md).
 *
 * BRAID_E2E_SEED replays the random choices (file sizes, when to kill); BRAID_E2E_CONSOLE_LOG=FILE
 * keeps every guest's console (by default it is removed with the run's temporary directory).
 */
import { readFileSync } from 'node:fs';
import { cp, lstat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Engine, MiB, makeTempDir, printLogsOnFailure, randomInt, seededRandom, sleep } from '../test/harness.ts';
import { exportDigest } from './lib/export-digest.ts';
import { GuestLab } from './lib/guest-lab.ts';
import {
  fsckCode,
  formatAndWriteScript,
  journalState,
  verifyResults,
  verifyScript,
  verifyThenChangeScript,
  writerScript,
} from './lib/guest-scenarios.ts';
import type { FileSpec, FileSum } from './lib/guest-scenarios.ts';
import { killAllGuests } from './lib/qemu-guest.ts';
import type { Marker } from './lib/qemu-guest.ts';

printLogsOnFailure();
// Registered after printLogsOnFailure, so it runs first (after-hooks run as a stack): no guest
// may still hold a socket of an engine that cleanup() is about to kill.
afterAll(killAllGuests);

const SEED = process.env['BRAID_E2E_SEED'] ? Number.parseInt(process.env['BRAID_E2E_SEED'], 10) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const BOOT_TIMEOUT_MS = 150_000;
// Typically 1 to 1.5 minutes each; generous for a busy 2-core machine emulating the CPU.
const TEST_TIMEOUT_MS = 420_000;
const VOLUME_SIZE = '256M';

let lab: GuestLab;
let workDir: string;

beforeAll(async () => {
  console.log(`[e2e] seed ${SEED} (BRAID_E2E_SEED=${SEED} replays it)`);
  workDir = await makeTempDir('braid-e2e-');
  const consoleLog = process.env['BRAID_E2E_CONSOLE_LOG'];
  lab = consoleLog ? GuestLab.create(workDir, consoleLog) : GuestLab.create(workDir);
});

afterEach(({ task }) => {
  if (task.result?.state === 'fail' && lab) console.error(`--- tail of the guests' console after "${task.name}" failed ---\n${lab.consoleTail()}`);
});

/** The engine's last "pool recovered" log entry: what the restart replayed. */
function lastRecovery(engine: Engine): string {
  const lines = readFileSync(engine.logPath, 'utf8').split('\n').filter((l) => l.includes('"pool recovered"'));
  const entry = lines.length > 0 ? (JSON.parse(lines.at(-1)!) as Record<string, unknown>) : {};
  return `replayed ${entry['replayedRecords']} records / ${entry['replayedBytes']} bytes in ${entry['ms']} ms (stop: ${entry['stop']})`;
}

async function fdatasyncs(engine: Engine): Promise<number> {
  return Number((await engine.stats())['fdatasyncs']);
}

function sumsFrom(markers: readonly Marker[], word: string): FileSum[] {
  return markers.filter((m) => m.word === word).map((m) => ({ name: m.args[0]!, sha256: m.args[1]! }));
}

/** The names among `expected` whose VERIFY verdict is not OK, with what was found. */
function verifyProblems(markers: readonly Marker[], expected: readonly FileSum[]): string[] {
  const results = verifyResults(markers);
  const problems: string[] = [];
  for (const f of expected) {
    const r = results.get(f.name);
    if (!r) problems.push(`${f.name}: not checked`);
    else if (r.verdict !== 'OK') problems.push(`${f.name}: ${r.verdict}${r.got ? ` (sha256 ${r.got}, expected ${f.sha256})` : ''}`);
  }
  return problems;
}

describe('a QEMU guest on a Braid volume', () => {
  it('A: ext4 files written in a guest survive snapshot + clone; writes to the clone leave the original alone', async () => {
    const rand = seededRandom(SEED);
    const engine = await Engine.create();
    await engine.start();
    await engine.createVolume('gold', VOLUME_SIZE);

    // Sizes that are not block multiples (sub-block writes, partial tails) and one file large
    // enough to span several engine batches.
    const files: FileSpec[] = [
      { name: 'tiny', bytes: 1 },
      { name: 'odd', bytes: randomInt(rand, 4097, 12_000) },
      ...Array.from({ length: 6 }, (_, i) => ({ name: `r${i + 1}`, bytes: randomInt(rand, 4096, 2 * MiB) })),
      { name: 'big', bytes: 8 * MiB + randomInt(rand, 1, 4096) },
    ];
    const syncsBefore = await fdatasyncs(engine);
    const writer = lab.boot('A1 mkfs+write on gold', engine.nbdSocket, 'gold', formatAndWriteScript(files));
    await lab.finish(writer, BOOT_TIMEOUT_MS);
    const written = sumsFrom(writer.markers, 'FILE');
    expect(written.map((f) => f.name)).toEqual(files.map((f) => f.name));
    // The guest's sync and umount reached the engine as NBD FLUSH (write-cache=on): each one
    // that found unwritten data cost an fdatasync.
    const syncsAfter = await fdatasyncs(engine);
    console.log(`[e2e] A: engine fdatasyncs during the first boot: ${syncsAfter - syncsBefore}`);
    expect(syncsAfter).toBeGreaterThan(syncsBefore);

    await engine.cliOk(['snapshot', 'create', 'gold', 'gold-v1']);
    await engine.cliOk(['volume', 'clone', 'gold-v1', 'vm1']);
    // Whole-export digests, read by libnbd (not QEMU): the snapshot is the reference the
    // original and the clone are held against.
    const snapDigest = await exportDigest(engine.uri('gold-v1'));
    expect(await exportDigest(engine.uri('gold')), 'original = snapshot right after the snapshot').toBe(snapDigest);
    expect(await exportDigest(engine.uri('vm1')), 'fresh clone = snapshot').toBe(snapDigest);

    const cloneGuest = lab.boot('A2 verify+change on clone', engine.nbdSocket, 'vm1', verifyThenChangeScript(written, 'r1', 'r2'));
    await lab.finish(cloneGuest, BOOT_TIMEOUT_MS);
    expect(fsckCode(cloneGuest.markers), 'e2fsck -fn on the clone').toBe(0);
    expect(verifyProblems(cloneGuest.markers, written), 'files on the clone').toEqual([]);

    expect(await exportDigest(engine.uri('vm1')), 'the clone changed').not.toBe(snapDigest);
    expect(await exportDigest(engine.uri('gold-v1')), 'the snapshot is unchanged').toBe(snapDigest);
    expect(await exportDigest(engine.uri('gold')), 'the original is unchanged').toBe(snapDigest);
    await engine.stop();
  }, TEST_TIMEOUT_MS);

  it('B: kill -9 of the engine while the guest writes and fsyncs; restart; QEMU reconnects; synced files survive', async () => {
    const rand = seededRandom(SEED ^ 0x5eed);
    const engine = await Engine.create();
    await engine.start();
    await engine.createVolume('wr', VOLUME_SIZE);

    const PHASE2_FILES = 6;
    const writer = lab.boot('B1 writer across kill -9', engine.nbdSocket, 'wr', writerScript(PHASE2_FILES), 60);
    await writer.waitMarker('READY', BOOT_TIMEOUT_MS);

    // Kill at a random point of the write loop: after a random number of synced files, plus a
    // random part of the time one file takes.
    const killAfter = randomInt(rand, 2, 7);
    const killDelayMs = randomInt(rand, 0, 700);
    await writer.waitMarker('SYNCED', 120_000, (m) => m.args[0] === `b${String(killAfter).padStart(4, '0')}`);
    await sleep(killDelayMs);
    // Everything the host has seen announced when it sends the signal was printed, so synced,
    // before the kill. (kill9 sends SIGKILL before its first await.)
    const before = sumsFrom(writer.markers, 'SYNCED');
    const lastBegun = writer.markers.filter((m) => m.word === 'BEGIN').at(-1)?.args[0];
    const killedAt = Date.now();
    await engine.kill9();
    console.log(`[e2e] B: killed the engine after ${before.length} synced files (+${killDelayMs} ms); last file begun: ${lastBegun}`);

    // The pool exactly as the kill left it, before QEMU can add anything.
    const crashCopy = join(workDir, 'crash-copy');
    await cp(engine.dir, crashCopy, {
      recursive: true,
      filter: async (src) => !(await lstat(src)).isSocket(),
    });
    const copiedAt = Date.now();
    await engine.start();
    const restartedAt = Date.now();
    console.log(
      `[e2e] B: engine back ${restartedAt - killedAt} ms after the kill (pool copied aside in ${copiedAt - killedAt} ms); ${lastRecovery(engine)}`,
    );

    // The guest continues: a file synced after the restart proves QEMU reconnected.
    const resumed = await writer.waitMarker('SYNCED', 60_000, (m) => m.at >= restartedAt);
    console.log(`[e2e] B: guest synced ${resumed.args[0]} ${resumed.at - restartedAt} ms after the restart (${resumed.at - killedAt} ms after the kill)`);
    writer.send('PHASE2');
    await writer.waitMarker('PHASE2', 60_000);
    await lab.finish(writer, BOOT_TIMEOUT_MS);

    const allSynced = writer.markers.filter((m) => m.word === 'SYNCED');
    // Phase-1 files the host saw announced only after the kill: the one in flight at the kill,
    // and those written between the restart and PHASE2 (the guest cannot tell them apart).
    const beforeNames = new Set(before.map((f) => f.name));
    const acrossKill = allSynced
      .filter((m) => m.args[2] === '1' && !beforeNames.has(m.args[0]!))
      .map((m) => ({ name: m.args[0]!, sha256: m.args[1]! }));
    const after = allSynced.filter((m) => m.args[2] === '2').map((m) => ({ name: m.args[0]!, sha256: m.args[1]! }));
    expect(after).toHaveLength(PHASE2_FILES);
    console.log(`[e2e] B: ${before.length} files synced before the kill, ${acrossKill.length} after it before PHASE2, ${after.length} after PHASE2`);

    const findings: string[] = [];
    // 1. In the running guest, page cache dropped: what the restarted engine returns.
    const checked = new Map(sumsFrom(writer.markers, 'CHECK').map((f) => [f.name, f.sha256]));
    const liveProblems = (files: readonly FileSum[]): string[] =>
      files.filter((f) => checked.get(f.name) !== f.sha256).map((f) => `${f.name}: read back ${checked.get(f.name) ?? 'nothing'}, expected ${f.sha256}`);
    for (const p of liveProblems(acrossKill)) findings.push(`in the running guest after reconnect, ${p}`);

    // 2. The pool as the kill left it: a consistent filesystem after journal replay, holding
    //    every file synced before the kill. This is the engine's promise for FLUSH.
    const copyEngine = new Engine(crashCopy, [], join(workDir, 'crash-copy-engine.log'));
    await copyEngine.start();
    const crashGuest = lab.boot('B2 verify the pool as killed', copyEngine.nbdSocket, 'wr', verifyScript([...before, ...acrossKill]));
    await lab.finish(crashGuest, BOOT_TIMEOUT_MS);
    await copyEngine.stop();
    const crashAcross = verifyResults(crashGuest.markers);
    console.log(
      `[e2e] B: in the pool as killed: journal ${journalState(crashGuest.markers)}, e2fsck ${fsckCode(crashGuest.markers)}; files announced after the kill: ${acrossKill.map((f) => `${f.name}=${crashAcross.get(f.name)?.verdict}`).join(' ') || 'none'}`,
    );

    // 3. A second kill -9 after the guest's clean unmount, then a fresh boot on the live pool.
    await engine.kill9();
    await engine.start();
    const finalGuest = lab.boot('B3 fresh boot after the second kill', engine.nbdSocket, 'wr', verifyScript([...before, ...acrossKill, ...after]));
    await lab.finish(finalGuest, BOOT_TIMEOUT_MS);
    for (const p of verifyProblems(finalGuest.markers, acrossKill)) findings.push(`on a fresh boot after the second kill, ${p}`);

    for (const f of findings) console.warn(`[e2e] FINDING (QEMU NBD reconnect: acknowledged, unflushed writes are not re-sent): ${f}`);
    console.log(`[e2e] B: engine errors logged: ${engine.errorLogLines().length}`);

    expect(fsckCode(crashGuest.markers), 'e2fsck -fn on the pool as killed (after journal replay)').toBe(0);
    expect(verifyProblems(crashGuest.markers, before), 'files synced before the kill, in the pool as killed').toEqual([]);
    expect(liveProblems(before), 'files synced before the kill, read back in the running guest').toEqual([]);
    expect(liveProblems(after), 'files synced after the restart, read back in the running guest').toEqual([]);
    expect(fsckCode(finalGuest.markers), 'e2fsck -fn on a fresh boot after the second kill').toBe(0);
    expect(verifyProblems(finalGuest.markers, [...before, ...after]), 'files on a fresh boot after the second kill').toEqual([]);
    await engine.stop();
  }, TEST_TIMEOUT_MS);
});
