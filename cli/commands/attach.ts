/**
 * `braid attach NAME` / `braid detach NAME`: a volume of the running engine as a real block
 * device on this machine, for a user (the CSI node plugin uses the same attachers).
 *
 * The attacher is chosen as the plugin chooses it (kernel NBD if present, else braid-fuse + loop;
 * BRAID_ATTACHER overrides), the NBD socket is DIR/nbd.sock, and attach state lives in
 * DIR/attach/. `attach` prints only the device path, so scripts can use `$(braid attach vm1)`.
 * `detach` does not need the engine: a device can be let go even when the engine is down.
 */
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { silentAttachLogger } from '../../csi/attach/attacher.ts';
import { selectAttacher } from '../../csi/attach/select.ts';
import { poolSockets } from '../../engine/socket-path.ts';
import type { CliContext } from '../context.ts';
import { withEngine } from '../engine-client.ts';
import { addDataOption } from '../options.ts';

/** Where attach state lives inside a pool directory. */
export const ATTACH_STATE_DIR_NAME = 'attach';

export function attachStateDir(dataDir: string): string {
  return join(resolve(dataDir), ATTACH_STATE_DIR_NAME);
}

export function registerAttachCommands(program: Command, ctx: CliContext): void {
  addDataOption(program.command('attach'), ctx.env)
    .description('attach a volume as a block device on this machine and print its path')
    .argument('<NAME>', 'volume name')
    .action(async (name: string, opts: { data: string }) => {
      // Asking the engine first turns "no such volume" and "no engine" into clear messages,
      // instead of an NBD connect failure from deep inside the attacher.
      await withEngine(opts.data, (client) => client.getVolume(name));
      const attacher = await selectAttacher({ env: ctx.env, logger: silentAttachLogger });
      const { nbdSocketPath } = poolSockets(opts.data);
      const { devicePath } = await attacher.attach({ exportName: name, socketPath: nbdSocketPath, stateDir: attachStateDir(opts.data) });
      ctx.stdout(`${devicePath}\n`);
    });

  addDataOption(program.command('detach'), ctx.env)
    .description('detach a volume attached with `braid attach` (it must not be mounted or open)')
    .argument('<NAME>', 'volume name')
    .action(async (name: string, opts: { data: string }) => {
      const attacher = await selectAttacher({ env: ctx.env, logger: silentAttachLogger });
      await attacher.detach({ exportName: name, stateDir: attachStateDir(opts.data) });
      ctx.stdout(`detached volume ${JSON.stringify(name)}\n`);
    });
}
