import { describe, expect, it } from 'vitest';
import { fakeExec } from './fake-exec.ts';
import { parseAttacherChoice, parseReconnectTimeoutMs, selectAttacher } from './select.ts';

function recordingLogger(): { lines: { obj: object; msg: string }[]; info: (obj: object, msg: string) => void; warn: (obj: object, msg: string) => void } {
  const lines: { obj: object; msg: string }[] = [];
  return { lines, info: (obj, msg) => lines.push({ obj, msg }), warn: (obj, msg) => lines.push({ obj, msg }) };
}

const supported = { supported: true, reason: '' };
const unsupported = { supported: false, reason: 'the kernel has no nbd module' };

describe('selectAttacher', () => {
  it('picks kernel NBD when available, and says so in one line', async () => {
    const logger = recordingLogger();
    const attacher = await selectAttacher({ env: {}, logger, nbdSupport: supported, exec: fakeExec(() => '') });
    expect(attacher.kind).toBe('nbd');
    expect(logger.lines).toHaveLength(1);
    expect(logger.lines[0]?.msg).toMatch(/kernel NBD/);
  });

  it('falls back to braid-fuse (online resize) with the reason', async () => {
    const logger = recordingLogger();
    const attacher = await selectAttacher({ env: {}, logger, nbdSupport: unsupported, exec: fakeExec(() => '') });
    expect(attacher.kind).toBe('fuse');
    expect(attacher.onlineResize).toBe(true);
    expect(logger.lines).toEqual([{ obj: { attacher: 'fuse', reason: 'the kernel has no nbd module' }, msg: expect.stringMatching(/braid-fuse/) }]);
  });

  it.each(['nbdfuse', 'fuse'] as const)('obeys BRAID_ATTACHER=%s even where kernel NBD works', async (kind) => {
    const logger = recordingLogger();
    const attacher = await selectAttacher({ env: { BRAID_ATTACHER: kind }, logger, nbdSupport: supported });
    expect(attacher.kind).toBe(kind);
    expect(logger.lines).toEqual([{ obj: { attacher: kind, reason: 'forced by BRAID_ATTACHER' }, msg: expect.any(String) }]);
  });

  it('keeps nbdfuse selectable: offline resize only', async () => {
    const attacher = await selectAttacher({ choice: 'nbdfuse', env: {}, logger: recordingLogger(), nbdSupport: unsupported });
    expect(attacher.kind).toBe('nbdfuse');
    expect(attacher.onlineResize).toBe(false);
  });

  it('lets the option override the environment', async () => {
    const attacher = await selectAttacher({ choice: 'nbd', env: { BRAID_ATTACHER: 'nbdfuse' }, logger: recordingLogger(), nbdSupport: supported });
    expect(attacher.kind).toBe('nbd');
  });

  it('fails at start-up when kernel NBD is forced but missing', async () => {
    const run = selectAttacher({ env: { BRAID_ATTACHER: 'nbd' }, logger: recordingLogger(), nbdSupport: unsupported });
    await expect(run).rejects.toMatchObject({ code: 'NOT_SUPPORTED', message: expect.stringContaining('no nbd module') });
  });

  it('parses the choice strictly', () => {
    expect(parseAttacherChoice(undefined)).toBe('auto');
    expect(parseAttacherChoice('')).toBe('auto');
    expect(parseAttacherChoice('nbd')).toBe('nbd');
    expect(parseAttacherChoice('fuse')).toBe('fuse');
    expect(parseAttacherChoice('nbdfuse')).toBe('nbdfuse');
    expect(() => parseAttacherChoice('NBD')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('reads braid-fuse\'s reconnect timeout strictly', async () => {
    expect(parseReconnectTimeoutMs(undefined)).toBeUndefined();
    expect(parseReconnectTimeoutMs('30000')).toBe(30_000);
    expect(() => parseReconnectTimeoutMs('30s')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => parseReconnectTimeoutMs('0')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    const run = selectAttacher({ env: { BRAID_FUSE_RECONNECT_TIMEOUT_MS: '-1' }, logger: recordingLogger(), nbdSupport: unsupported });
    await expect(run).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
