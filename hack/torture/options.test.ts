import { describe, expect, it } from 'vitest';
import { parseTortureArgs, reproduceCommand, UsageError } from './options.ts';

describe('npm run torture options', () => {
  it('takes minutes or rounds, and defaults the rest', () => {
    expect(parseTortureArgs(['--minutes', '0.5'])).toEqual({
      minutes: 0.5,
      rounds: undefined,
      seed: undefined,
      volumes: 4,
      connections: 2,
      data: undefined,
      help: false,
    });
    const o = parseTortureArgs(['--rounds', '3', '--seed', '4294967295', '--volumes', '9', '--connections', '3', '--data', '/tmp/x']);
    expect(o).toMatchObject({ rounds: 3, seed: 4294967295, volumes: 9, connections: 3, data: '/tmp/x' });
  });

  it('refuses a run without a length, bad numbers and unknown flags with a usage error', () => {
    const bad: string[][] = [
      [],
      ['--minutes', '0'],
      ['--minutes', '-1'],
      ['--minutes', 'ten'],
      ['--rounds', '1.5'],
      ['--rounds', '0'],
      ['--rounds', '1', '--seed', '4294967296'],
      ['--rounds', '1', '--volumes', '0'],
      ['--rounds', '1', '--connections', 'x'],
      ['--rounds', '1', '--data', ''],
      ['--rounds', '1', '--bogus'],
      ['--rounds', '1', 'extra'],
    ];
    for (const args of bad) expect(() => parseTortureArgs(args), args.join(' ')).toThrow(UsageError);
  });

  it('--help needs no length', () => {
    expect(parseTortureArgs(['--help']).help).toBe(true);
  });

  it('prints a command that replays the run', () => {
    expect(reproduceCommand({ rounds: 7, seed: 42, volumes: 4, connections: 2 })).toBe(
      'npm run torture -- --rounds 7 --seed 42 --volumes 4 --connections 2',
    );
  });
});
