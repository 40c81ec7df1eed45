import { describe, expect, it } from 'vitest';
import { ExecError, execTool, exitedWith } from './exec.ts';

describe('execTool', () => {
  it('returns stdout and stderr of a successful program', async () => {
    const r = await execTool('sh', ['-c', 'echo out; echo err >&2']);
    expect(r).toEqual({ stdout: 'out\n', stderr: 'err\n' });
  });

  it('passes arguments as an array, never through a shell', async () => {
    const r = await execTool('printf', ['%s|', 'a b', '$(id)', ';', '*']);
    expect(r.stdout).toBe('a b|$(id)|;|*|');
  });

  it('reports a non-zero exit with its status and stderr', async () => {
    const err = await execTool('sh', ['-c', 'echo why >&2; exit 3']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExecError);
    expect(err).toMatchObject({ code: 'EXEC_EXIT', exitCode: 3, stderr: 'why\n' });
    expect(exitedWith(err, 3)).toBe(true);
    expect(exitedWith(err, 2)).toBe(false);
    expect((err as Error).message).toContain('exit status 3: why');
  });

  it('reports a missing program as EXEC_NOT_FOUND', async () => {
    const err = await execTool('braid-no-such-tool', []).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'EXEC_NOT_FOUND', exitCode: null });
    expect(exitedWith(err, 1)).toBe(false);
  });

  it('kills a program that runs past its timeout', async () => {
    const err = await execTool('sleep', ['10'], { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'EXEC_TIMEOUT' });
  });

  it('gives a program end-of-file on stdin, so a question does not hang it', async () => {
    const r = await execTool('sh', ['-c', 'read answer || echo eof'], { timeoutMs: 5_000 });
    expect(r.stdout).toBe('eof\n');
  });

  it('reports a program killed by a signal', async () => {
    const err = await execTool('sh', ['-c', 'kill -KILL $$']).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'EXEC_SIGNALED', signal: 'SIGKILL' });
  });
});
