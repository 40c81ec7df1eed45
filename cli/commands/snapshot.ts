/**
 * `braid snapshot create|ls|rm`: snapshots through the running engine. A snapshot is a
 * read-only NBD export of a volume's content at one instant; `braid volume clone` makes a
 * writable volume from one.
 */
import type { Command } from 'commander';
import { poolSockets } from '../../engine/socket-path.ts';
import { formatSize } from '../../engine/size.ts';
import type { CliContext } from '../context.ts';
import { withEngine } from '../engine-client.ts';
import { addDataOption } from '../options.ts';
import { formatSnapshotTable, nbdUri, snapshotsJson } from '../output.ts';

interface DataOptions {
  data: string;
}

export function registerSnapshotCommands(program: Command, ctx: CliContext): void {
  const snapshot = program.command('snapshot').description('create, list and remove read-only snapshots of volumes');

  addDataOption(snapshot.command('create'), ctx.env)
    .description('take a snapshot of a volume (metadata only: instant, no copy); it is a read-only NBD export')
    .argument('<VOLUME>', 'the volume to snapshot')
    .argument('<SNAP>', 'snapshot name: [a-z0-9][a-z0-9._-]{0,127}, not used by any volume or snapshot')
    .action(async (volume: string, name: string, opts: DataOptions) => {
      const created = await withEngine(opts.data, (client) => client.createSnapshot(volume, name));
      const uri = nbdUri(poolSockets(opts.data).nbdSocketPath, created.name);
      ctx.stdout(
        `created snapshot ${JSON.stringify(created.name)} of volume ${JSON.stringify(created.sourceVolume)} ` +
          `(${formatSize(created.sizeBytes)}, read-only): ${uri}\n`,
      );
    });

  addDataOption(snapshot.command('ls'), ctx.env)
    .description('list snapshots')
    .option('--json', 'print JSON: {"snapshots": [{name, sourceVolume, sizeBytes, allocatedBytes, createdAt}]}')
    .action(async (opts: DataOptions & { json?: boolean }) => {
      const snapshots = await withEngine(opts.data, (client) => client.listSnapshots());
      ctx.stdout(opts.json ? snapshotsJson(snapshots) : formatSnapshotTable(snapshots));
    });

  addDataOption(snapshot.command('rm'), ctx.env)
    .description('remove a snapshot (it must not be attached); clones made from it keep their data')
    .argument('<SNAP>', 'snapshot name')
    .action(async (name: string, opts: DataOptions) => {
      await withEngine(opts.data, (client) => client.deleteSnapshot(name));
      ctx.stdout(`removed snapshot ${JSON.stringify(name)}\n`);
    });
}
