/**
 * Logging of connections refused over the connection limit, once per burst rather than once per
 * connection: a client retrying in a loop must not flood the log (and, through a slow log pipe,
 * the engine). The first refusal of a burst is logged; later ones are counted and summed up
 * when the burst ends (the next accepted connection) or, while it lasts, once per interval.
 * No timer: everything happens on a refusal or an accept.
 */
import type { Logger } from '../logger.ts';

export class RefusalLog {
  private readonly logger: Logger;
  private readonly summaryIntervalMs: number;
  private readonly now: () => number;
  /** Refusals not yet reported in a log line. */
  private unreported = 0;
  private burstRefusals = 0;
  private lastLogAt = 0;

  constructor(logger: Logger, summaryIntervalMs: number, now: () => number = Date.now) {
    this.logger = logger;
    this.summaryIntervalMs = summaryIntervalMs;
    this.now = now;
  }

  refused(maxConnections: number): void {
    const now = this.now();
    this.burstRefusals++;
    if (this.burstRefusals === 1) {
      this.lastLogAt = now;
      this.logger.warn({ maxConnections }, 'NBD connection limit reached; refusing new connections');
      return;
    }
    this.unreported++;
    if (now - this.lastLogAt >= this.summaryIntervalMs) {
      this.logger.warn(
        { maxConnections, refused: this.unreported, refusedInBurst: this.burstRefusals },
        'NBD connection limit still reached; refusing new connections',
      );
      this.unreported = 0;
      this.lastLogAt = now;
    }
  }

  /** A connection was accepted: a burst of refusals, if any, is over. */
  accepted(): void {
    if (this.burstRefusals === 0) return;
    this.logger.info({ refusedInBurst: this.burstRefusals }, 'NBD connections accepted again after refusals at the limit');
    this.burstRefusals = 0;
    this.unreported = 0;
  }
}
