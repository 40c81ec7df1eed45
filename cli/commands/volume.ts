/** `braid volume create|ls|rm|resize|clone`: volume management through the running engine. */
import type { Command } from 'commander';
import { poolSockets } from '../../engine/socket-path.ts';
import { formatSize } from '../../engine/size.ts';
import type { CliContext } from '../context.ts';
import { withEngine } from '../engine-client.ts';
import { addDataOption, parseSizeArgument } from '../options.ts';
import { formatVolumeTable, nbdUri, volumesJson } from '../output.ts';

interface DataOptions {
  data: string;
}

export function registerVolumeCommands(program: Command, ctx: CliContext): void {
  const volume = program.command('volume').description('create, list, resize, clone and remove volumes');

  addDataOption(volume.command('create'), ctx.env)
    .description('create an empty thin volume')
    .argument('<NAME>', 'volume name: [a-z0-9][a-z0-9._-]{0,127}')
    .requiredOption('--size <SIZE>', 'size: bytes, or with a K/M/G/T suffix (512M, 4G, 1T)')
    .option('--dedup', 'store identical 4 KiB blocks once, matched by SHA-256 with the other dedup volumes (clones inherit it)')
    .option('--dedup-domain <NAME>', 'dedup only with volumes of this domain (implies --dedup); default: the pool-wide domain')
    .action(async (name: string, opts: DataOptions & { size: string; dedup?: boolean; dedupDomain?: string }) => {
      const sizeBytes = parseSizeArgument(opts.size);
      const dedup = opts.dedup === true || opts.dedupDomain !== undefined;
      const domain = opts.dedupDomain === undefined ? {} : { dedupDomain: opts.dedupDomain };
      const created = await withEngine(opts.data, (client) => client.createVolume(name, sizeBytes, { dedup, ...domain }));
      const uri = nbdUri(poolSockets(opts.data).nbdSocketPath, created.name);
      ctx.stdout(`created volume ${JSON.stringify(created.name)} (${formatSize(created.sizeBytes)}): ${uri}\n`);
    });

  addDataOption(volume.command('ls'), ctx.env)
    .description('list volumes')
    .option('--json', 'print JSON: {"volumes": [{name, sizeBytes, allocatedBytes, createdAt, openHandles}]}')
    .action(async (opts: DataOptions & { json?: boolean }) => {
      const volumes = await withEngine(opts.data, (client) => client.listVolumes());
      ctx.stdout(opts.json ? volumesJson(volumes) : formatVolumeTable(volumes));
    });

  addDataOption(volume.command('rm'), ctx.env)
    .description('remove a volume (it must not be attached)')
    .argument('<NAME>', 'volume name')
    .action(async (name: string, opts: DataOptions) => {
      await withEngine(opts.data, (client) => client.deleteVolume(name));
      ctx.stdout(`removed volume ${JSON.stringify(name)}\n`);
    });

  addDataOption(volume.command('resize'), ctx.env)
    .description('grow a volume (online; shrinking is refused)')
    .argument('<NAME>', 'volume name')
    .requiredOption('--size <SIZE>', 'new size: bytes, or with a K/M/G/T suffix')
    .action(async (name: string, opts: DataOptions & { size: string }) => {
      const sizeBytes = parseSizeArgument(opts.size);
      const resized = await withEngine(opts.data, (client) => client.resizeVolume(name, sizeBytes));
      ctx.stdout(`resized volume ${JSON.stringify(resized.name)} to ${formatSize(resized.sizeBytes)}\n`);
    });

  addDataOption(volume.command('clone'), ctx.env)
    .description('create a volume with the content of a volume or a snapshot (metadata only: instant, no copy)')
    .argument('<SOURCE>', 'the volume or snapshot to clone')
    .argument('<NEW>', 'name of the new volume: [a-z0-9][a-z0-9._-]{0,127}')
    .option('--size <SIZE>', "size of the new volume, not smaller than the source's (default: the source's size)")
    .action(async (source: string, name: string, opts: DataOptions & { size?: string }) => {
      const sizeBytes = opts.size === undefined ? undefined : parseSizeArgument(opts.size);
      const cloned = await withEngine(opts.data, (client) => client.cloneVolume(source, name, sizeBytes));
      const uri = nbdUri(poolSockets(opts.data).nbdSocketPath, cloned.name);
      ctx.stdout(`cloned ${JSON.stringify(source)} to volume ${JSON.stringify(cloned.name)} (${formatSize(cloned.sizeBytes)}): ${uri}\n`);
    });
}
