/** Options and arguments shared by several commands, and their parsing. */
import { Option } from 'commander';
import type { Command } from 'commander';
import { parseSize } from '../engine/size.ts';
import { UsageError } from './errors.ts';

export const DEFAULT_DATA_DIR = './braid-data';
export const DATA_DIR_ENV = 'BRAID_DATA';

/** `--data DIR` on a command: default $BRAID_DATA, else ./braid-data (CLI.md). */
export function addDataOption(command: Command, env: Readonly<Record<string, string | undefined>>): Command {
  const fromEnv = env[DATA_DIR_ENV];
  const fallback = fromEnv !== undefined && fromEnv !== '' ? fromEnv : DEFAULT_DATA_DIR;
  return command.addOption(
    new Option('--data <DIR>', 'pool directory of the engine').default(fallback, `$${DATA_DIR_ENV} or ${DEFAULT_DATA_DIR}`),
  );
}

/** A SIZE argument in bytes: plain bytes or a binary K/M/G/T suffix. A bad one is a usage error. */
export function parseSizeArgument(text: string): number {
  const sizeBytes = parseSize(text);
  if (sizeBytes === undefined) throw new UsageError(`invalid size ${JSON.stringify(text)}: use bytes or a K/M/G/T suffix`);
  return sizeBytes;
}

/** A count argument (`--max-connections 64`): a whole number from 1 up. A bad one is a usage error. */
export function parseCountArgument(flag: string, text: string): number {
  const count = /^[0-9]{1,15}$/.test(text) ? Number(text) : NaN;
  if (!(count >= 1)) throw new UsageError(`invalid ${flag} ${JSON.stringify(text)}: use a whole number of at least 1`);
  return count;
}

/** HOST:PORT, e.g. 127.0.0.1:9090 or [::1]:9090. */
export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:\s[\]]*):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new UsageError(`invalid address ${JSON.stringify(text)}: use HOST:PORT, e.g. 127.0.0.1:9090`);
  return { host: m[1] as string, port };
}
