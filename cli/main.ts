/**
 * The `braid` executable (bin/braid runs it on the project's Node 24). Exits explicitly so a
 * lingering handle can never keep a finished command alive.
 */
import { defaultContext } from './context.ts';
import { runCli } from './run.ts';

process.exit(await runCli(process.argv.slice(2), defaultContext()));
