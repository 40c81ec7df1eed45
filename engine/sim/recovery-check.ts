/**
 * Checks a freshly recovered pool against the model: the exports that must exist do, no other
 * does, each has a size it may have, and every block holds a value allowed after the restart
 * (exactly the current one when `exact`). Then the model takes what was found.
 */
import type { Pool } from '../pool.ts';
import { BLOCK_BYTES } from './block-data.ts';
import { readExport, SimFailure, verifyBlocks } from './checker.ts';
import type { RecoveryKind } from './model.ts';
import type { RunContext } from './run-context.ts';

type CheckContext = Pick<RunContext, 'model' | 'damage' | 'disk' | 'stats'>;

export async function checkRecovered(ctx: CheckContext, pool: Pool, how: RecoveryKind, exact: boolean, context: string): Promise<number> {
  const { model, damage, disk, stats } = ctx;
  const damageNote = () => {
    const summary = damage.summary(disk, model);
    return summary === 'none' ? '' : `; damage on the medium: ${summary}`;
  };
  const listed = new Set(pool.listExports());
  for (const e of model.exports.values()) {
    if (e.onDisk === 'yes' && !listed.has(e.name)) throw new SimFailure(`${context}: ${e.kind} ${e.name} is gone${damageNote()}`);
  }
  const found = new Map<string, Array<Buffer | undefined>>();
  const excuse = damage.readExcuse(disk);
  for (const name of [...listed].sort()) {
    const e = model.exports.get(name);
    if (!e) throw new SimFailure(`${context}: ${name} exists but was never acknowledged (or was deleted)`);
    const kindOk = e.kind === 'snapshot' ? pool.listSnapshots().some((s) => s.name === name) : pool.listVolumes().some((v) => v.name === name);
    if (!kindOk) throw new SimFailure(`${context}: ${name} came back as the wrong kind (not a ${e.kind})`);
    const dev = pool.openExport(name);
    const blocks = dev.sizeBytes / BLOCK_BYTES;
    dev.close();
    if (!e.sizesOnDisk.has(blocks)) throw new SimFailure(`${context}: ${name} has ${blocks} blocks; expected ${[...e.sizesOnDisk].join(' or ')}`);
    if (blocks > e.blocks.length) model.resize(e, blocks);
    else e.blocks = e.blocks.slice(0, blocks);
    try {
      const rb = await readExport(pool, e, excuse, context);
      verifyBlocks(model, e, rb, { exact, context, damage });
      stats.bytesVerified += rb.bytesRead;
      stats.excusedReadFailures += rb.excusedFailures;
      // An unreadable damaged block still stands for its value: the engine points at it.
      found.set(name, rb.blocks.map((b, lba) => (b ? Buffer.from(b) : rb.unreadable.get(lba))));
    } catch (err) {
      if (err instanceof SimFailure) throw new SimFailure(`${err.message}${damageNote()}`, { cause: err });
      throw err;
    }
  }
  model.adoptRecovered(found, how);
  return listed.size;
}
