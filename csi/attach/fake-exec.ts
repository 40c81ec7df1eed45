/**
 * For unit tests: an Exec that records every command and answers from a handler instead of
 * running anything, and a helper to build the ExecError a tool exiting with a status produces.
 */
import { ExecError } from './exec.ts';
import type { Exec, ExecResult } from './exec.ts';

export interface RecordedCommand {
  file: string;
  args: readonly string[];
}

export type FakeHandler = (file: string, args: readonly string[]) => ExecResult | string | Error;

export function fakeExec(handler: FakeHandler): Exec & { calls: RecordedCommand[] } {
  const calls: RecordedCommand[] = [];
  const exec: Exec = async (file, args) => {
    calls.push({ file, args: [...args] });
    const answer = handler(file, args);
    if (answer instanceof Error) throw answer;
    return typeof answer === 'string' ? { stdout: answer, stderr: '' } : answer;
  };
  return Object.assign(exec, { calls });
}

export function exitError(file: string, args: readonly string[], exitCode: number, stderr = ''): ExecError {
  return new ExecError({ code: 'EXEC_EXIT', file, args, exitCode, signal: null, stdout: '', stderr });
}
