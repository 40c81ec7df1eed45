/** `braid stats [--json]`: pool-wide space and coalescing figures from the running engine. */
import type { Command } from 'commander';
import type { CliContext } from '../context.ts';
import { withEngine } from '../engine-client.ts';
import { addDataOption } from '../options.ts';
import { formatStats, statsJson } from '../output.ts';

export function registerStatsCommand(program: Command, ctx: CliContext): void {
  addDataOption(program.command('stats'), ctx.env)
    .description('show space saved and the coalescing ratio of the pool')
    .option('--json', 'print JSON (keys in CLI.md; more may be added)')
    .action(async (opts: { data: string; json?: boolean }) => {
      const stats = await withEngine(opts.data, (client) => client.stats());
      ctx.stdout(opts.json ? statsJson(stats) : formatStats(stats));
    });
}
