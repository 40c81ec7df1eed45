/**
 * The braid CLI as a function: argv in, exit status out, all I/O through a CliContext, so tests
 * run it in-process. Exit statuses and the one-line error format are in errors.ts.
 *
 * Commands and options follow CLI.md exactly; `--data DIR` is an option of every leaf command.
 */
import { Command, CommanderError } from 'commander';
import { registerAttachCommands } from './commands/attach.ts';
import { registerServeCommand } from './commands/serve.ts';
import { registerSnapshotCommands } from './commands/snapshot.ts';
import { registerStatsCommand } from './commands/stats.ts';
import { registerVolumeCommands } from './commands/volume.ts';
import type { CliContext } from './context.ts';
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, describeError, errorLine } from './errors.ts';

export async function runCli(argv: readonly string[], ctx: CliContext): Promise<number> {
  const run: { dataDir?: string } = {};
  const program = buildProgram(ctx, run);
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return EXIT_OK;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has printed the message (through outputError below) or the help already.
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    ctx.stderr(errorLine(describeError(err, run.dataDir)));
    return err instanceof UsageError ? EXIT_USAGE : EXIT_FAILURE;
  }
}

function buildProgram(ctx: CliContext, run: { dataDir?: string }): Command {
  const program = new Command('braid');
  // Settings first: subcommands copy them when they are created.
  program
    .description('Braid: coalescing, no-dupe block storage for VM disks, served over NBD')
    .exitOverride()
    .configureOutput({
      writeOut: (text) => ctx.stdout(text),
      writeErr: (text) => ctx.stderr(text),
      outputError: (text, write) => write(errorLine(text.replace(/^error: /, ''))),
    })
    .hook('preAction', (_program, actionCommand) => {
      const data: unknown = actionCommand.opts()['data'];
      if (typeof data === 'string') run.dataDir = data;
    });
  registerServeCommand(program, ctx);
  registerVolumeCommands(program, ctx);
  registerSnapshotCommands(program, ctx);
  registerStatsCommand(program, ctx);
  registerAttachCommands(program, ctx);
  return program;
}
