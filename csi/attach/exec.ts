/**
 * The one way the attachers and mount helpers run system tools: execFile with an argument
 * array (never a shell string built from data), a timeout, and a typed error that carries the
 * exit code and stderr. Callers decide by `exitCode` where the tool documents its codes
 * (blkid: 2 = nothing found; nbd-client -c: 1 = not connected), never by message text.
 *
 * `Exec` is a type so that unit tests can record the commands an attacher would run.
 */
import { execFile } from 'node:child_process';

/** Long enough for mkfs.xfs on a large device; short enough that a hung tool is reported. */
export const DEFAULT_EXEC_TIMEOUT_MS = 120_000;
/** Tools here print little; more is a bug, and execFile fails rather than buffer forever. */
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

export interface ExecOptions {
  timeoutMs?: number;
}

export interface ExecResult {
  stdout: string;
  stderr: string;
}

export type Exec = (file: string, args: readonly string[], opts?: ExecOptions) => Promise<ExecResult>;

export type ExecErrorCode =
  | 'EXEC_NOT_FOUND' // the program is not installed (spawn ENOENT)
  | 'EXEC_START_FAILED' // it could not be started for another reason (EACCES, ...)
  | 'EXEC_TIMEOUT' // killed after timeoutMs
  | 'EXEC_SIGNALED' // ended by a signal it did not get from us
  | 'EXEC_OUTPUT_TOO_LARGE' // printed more than MAX_OUTPUT_BYTES and was killed
  | 'EXEC_EXIT'; // exited with a non-zero status: see exitCode

export class ExecError extends Error {
  readonly code: ExecErrorCode;
  readonly file: string;
  readonly args: readonly string[];
  /** The exit status when code is EXEC_EXIT; otherwise null. */
  readonly exitCode: number | null;
  readonly signal: string | null;
  readonly stdout: string;
  readonly stderr: string;

  constructor(fields: {
    code: ExecErrorCode;
    file: string;
    args: readonly string[];
    exitCode: number | null;
    signal: string | null;
    stdout: string;
    stderr: string;
    cause?: unknown;
  }) {
    super(describe(fields), { cause: fields.cause });
    this.name = 'ExecError';
    this.code = fields.code;
    this.file = fields.file;
    this.args = fields.args;
    this.exitCode = fields.exitCode;
    this.signal = fields.signal;
    this.stdout = fields.stdout;
    this.stderr = fields.stderr;
  }
}

function describe(f: { code: ExecErrorCode; file: string; args: readonly string[]; exitCode: number | null; signal: string | null; stderr: string }): string {
  const command = [f.file, ...f.args].join(' ');
  const detail = f.stderr.trim().split('\n').slice(-3).join(' / ');
  switch (f.code) {
    case 'EXEC_NOT_FOUND':
      return `${f.file} is not installed (or not on PATH)`;
    case 'EXEC_START_FAILED':
      return `could not start ${f.file}`;
    case 'EXEC_TIMEOUT':
      return `${command} timed out`;
    case 'EXEC_SIGNALED':
      return `${command} was killed by ${f.signal ?? 'a signal'}`;
    case 'EXEC_OUTPUT_TOO_LARGE':
      return `${command} printed more than ${MAX_OUTPUT_BYTES} bytes`;
    case 'EXEC_EXIT':
      return `${command} failed with exit status ${f.exitCode}${detail ? `: ${detail}` : ''}`;
    default: {
      const unreachable: never = f.code;
      return unreachable;
    }
  }
}

/** True when `err` is an ExecError for a program that exited with one of `codes`. */
export function exitedWith(err: unknown, ...codes: number[]): err is ExecError {
  return err instanceof ExecError && err.code === 'EXEC_EXIT' && err.exitCode !== null && codes.includes(err.exitCode);
}

export const execTool: Exec = (file, args, opts = {}) => {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_EXEC_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      [...args],
      { timeout: timeoutMs, maxBuffer: MAX_OUTPUT_BYTES, killSignal: 'SIGKILL', encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ stdout, stderr });
          return;
        }
        reject(toExecError(err, file, args, stdout, stderr));
      },
    );
    // Nothing is ever typed at these tools: a tool that asks a question (mke2fs's "Proceed
    // anyway?") reads end-of-file and stops, instead of waiting for the timeout.
    child.stdin?.end();
  });
};

function toExecError(err: Error, file: string, args: readonly string[], stdout: string, stderr: string): ExecError {
  // execFile's error: `code` is the exit status (number) or a spawn errno (string); `killed`
  // is set when the timeout fired.
  const e = err as Error & { code?: number | string; killed?: boolean; signal?: string | null };
  const base = { file, args, stdout, stderr, cause: err };
  if (e.code === 'ENOENT') return new ExecError({ ...base, code: 'EXEC_NOT_FOUND', exitCode: null, signal: null });
  if (e.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER') return new ExecError({ ...base, code: 'EXEC_OUTPUT_TOO_LARGE', exitCode: null, signal: null });
  if (typeof e.code === 'string') return new ExecError({ ...base, code: 'EXEC_START_FAILED', exitCode: null, signal: null });
  if (e.killed === true) return new ExecError({ ...base, code: 'EXEC_TIMEOUT', exitCode: null, signal: e.signal ?? null });
  if (typeof e.code === 'number') return new ExecError({ ...base, code: 'EXEC_EXIT', exitCode: e.code, signal: null });
  return new ExecError({ ...base, code: 'EXEC_SIGNALED', exitCode: null, signal: e.signal ?? null });
}
