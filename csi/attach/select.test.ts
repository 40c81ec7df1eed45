import { describe, expect, it } from 'vitest';
import { fakeExec } from './fake-exec.ts';
import { parseAttacherChoice, selectAttacher } from './select.ts';

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

  it('falls back to nbdfuse with the reason', async () => {
    const logger = recordingLogger();
    const attacher = await selectAttacher({ env: {}, logger, nbdSupport: unsupported, exec: fakeExec(() => '') });
    expect(attacher.kind).toBe('nbdfuse');
    expect(logger.lines).toEqual([{ obj: { attacher: 'nbdfuse', reason: 'the kernel has no nbd module' }, msg: expect.stringMatching(/nbdfuse/) }]);
  });

  it('obeys BRAID_ATTACHER=nbdfuse even where kernel NBD works', async () => {
    const attacher = await selectAttacher({ env: { BRAID_ATTACHER: 'nbdfuse' }, logger: recordingLogger(), nbdSupport: supported });
    expect(attacher.kind).toBe('nbdfuse');
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
    expect(() => parseAttacherChoice('NBD')).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
