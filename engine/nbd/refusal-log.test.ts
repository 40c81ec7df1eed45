import { describe, expect, it } from 'vitest';
import { RefusalLog } from './refusal-log.ts';
import { recordingLogger } from './test-support.ts';

describe('RefusalLog', () => {
  function setup() {
    const logger = recordingLogger();
    let now = 1_000;
    const log = new RefusalLog(logger, 60_000, () => now);
    return { logger, log, advance: (ms: number) => (now += ms) };
  }

  it('logs the first refusal of a burst and stays quiet for the rest', () => {
    const { logger, log } = setup();
    for (let i = 0; i < 500; i++) log.refused(8);
    expect(logger.records).toHaveLength(1);
    expect(logger.records[0]).toMatchObject({ level: 'warn', obj: { maxConnections: 8 } });
  });

  it('sums the burst up when connections are accepted again', () => {
    const { logger, log } = setup();
    log.accepted();
    expect(logger.records).toHaveLength(0);
    for (let i = 0; i < 5; i++) log.refused(8);
    log.accepted();
    log.accepted();
    expect(logger.records.map((r) => r.level)).toEqual(['warn', 'info']);
    expect(logger.records[1]?.obj).toEqual({ refusedInBurst: 5 });
    // A new burst is logged again.
    log.refused(8);
    expect(logger.records).toHaveLength(3);
  });

  it('reports a long burst once per interval', () => {
    const { logger, log, advance } = setup();
    log.refused(8);
    for (let i = 0; i < 100; i++) {
      advance(1_000);
      log.refused(8);
    }
    // 100 s of refusals: the first one, then a summary at 60 s.
    expect(logger.records).toHaveLength(2);
    expect(logger.records[1]?.obj).toEqual({ maxConnections: 8, refused: 60, refusedInBurst: 61 });
  });
});
