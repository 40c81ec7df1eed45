/**
 * Chooses the attacher once, at start-up: kernel NBD when the machine has it, braid-fuse + loop
 * (`fuse`) otherwise. BRAID_ATTACHER (or the `choice` option) forces one: `nbd`, `fuse`,
 * `nbdfuse` or `auto`. Forcing `nbd` where it cannot work is an error at start-up, not at the
 * first attach.
 *
 * The choice is logged as one line with the reason, because it decides the data path (and
 * whether engine restarts are survivable and volumes grow online: see the attachers).
 */
import type { Attacher, AttachLogger, AttacherKind } from './attacher.ts';
import { AttachError } from './errors.ts';
import { execTool } from './exec.ts';
import type { Exec } from './exec.ts';
import { NbdAttacher, nbdSupport } from './nbd-attacher.ts';
import type { Support } from './nbd-attacher.ts';
import { FuseAttacher } from './fuse-attacher.ts';
import { NbdfuseAttacher } from './nbdfuse-attacher.ts';

export const ATTACHER_ENV = 'BRAID_ATTACHER';
/** How long braid-fuse waits for a restarting engine before failing I/O (milliseconds; 120000 by default). */
export const FUSE_RECONNECT_TIMEOUT_ENV = 'BRAID_FUSE_RECONNECT_TIMEOUT_MS';

export type AttacherChoice = AttacherKind | 'auto';

export interface SelectOptions {
  /** Overrides the environment. */
  choice?: AttacherChoice;
  env?: Readonly<Record<string, string | undefined>>;
  logger: AttachLogger;
  exec?: Exec;
  /** For tests: what kernel NBD support to assume instead of probing the machine. */
  nbdSupport?: Support;
}

export function parseAttacherChoice(text: string | undefined): AttacherChoice {
  if (text === undefined || text === '' || text === 'auto') return 'auto';
  if (text === 'nbd' || text === 'fuse' || text === 'nbdfuse') return text;
  throw new AttachError('INVALID_ARGUMENT', `${ATTACHER_ENV}=${JSON.stringify(text)}: use nbd, fuse, nbdfuse or auto`);
}

/** The reconnect timeout from the environment, or undefined for braid-fuse's default. */
export function parseReconnectTimeoutMs(text: string | undefined): number | undefined {
  if (text === undefined || text === '') return undefined;
  const ms = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(ms) || ms <= 0) {
    throw new AttachError('INVALID_ARGUMENT', `${FUSE_RECONNECT_TIMEOUT_ENV}=${JSON.stringify(text)}: use a positive number of milliseconds`);
  }
  return ms;
}

export async function selectAttacher(opts: SelectOptions): Promise<Attacher> {
  const exec = opts.exec ?? execTool;
  const env = opts.env ?? process.env;
  const choice = opts.choice ?? parseAttacherChoice(env[ATTACHER_ENV]);
  const reconnectTimeoutMs = parseReconnectTimeoutMs(env[FUSE_RECONNECT_TIMEOUT_ENV]);
  const make = (kind: AttacherKind): Attacher => {
    switch (kind) {
      case 'nbd':
        return new NbdAttacher({ exec, logger: opts.logger });
      case 'fuse':
        return new FuseAttacher({ exec, logger: opts.logger, ...(reconnectTimeoutMs === undefined ? {} : { reconnectTimeoutMs }) });
      case 'nbdfuse':
        return new NbdfuseAttacher({ exec, logger: opts.logger });
      default: {
        const unreachable: never = kind;
        return unreachable;
      }
    }
  };

  if (choice === 'nbdfuse') {
    opts.logger.info({ attacher: 'nbdfuse', reason: `forced by ${ATTACHER_ENV}` }, 'attaching volumes with nbdfuse + loop devices');
    return make('nbdfuse');
  }
  if (choice === 'fuse') {
    opts.logger.info({ attacher: 'fuse', reason: `forced by ${ATTACHER_ENV}` }, 'attaching volumes with braid-fuse + loop devices');
    return make('fuse');
  }
  const support = opts.nbdSupport ?? (await nbdSupport(exec));
  if (choice === 'nbd') {
    if (!support.supported) throw new AttachError('NOT_SUPPORTED', `${ATTACHER_ENV}=nbd, but ${support.reason}`);
    opts.logger.info({ attacher: 'nbd', reason: `forced by ${ATTACHER_ENV}` }, 'attaching volumes with kernel NBD (nbd-client)');
    return make('nbd');
  }
  if (support.supported) {
    opts.logger.info({ attacher: 'nbd', reason: 'kernel NBD available' }, 'attaching volumes with kernel NBD (nbd-client)');
    return make('nbd');
  }
  opts.logger.info({ attacher: 'fuse', reason: support.reason }, 'attaching volumes with braid-fuse + loop devices (no kernel NBD)');
  return make('fuse');
}
