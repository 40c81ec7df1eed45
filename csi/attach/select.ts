/**
 * Chooses the attacher once, at start-up: kernel NBD when the machine has it, nbdfuse + loop
 * otherwise. BRAID_ATTACHER (or the `choice` option) forces one: `nbd`, `nbdfuse` or `auto`.
 * Forcing `nbd` where it cannot work is an error at start-up, not at the first attach.
 *
 * The choice is logged as one line with the reason, because it decides the data path (and
 * whether engine restarts and plugin restarts are survivable: see the two attachers).
 */
import type { Attacher, AttachLogger, AttacherKind } from './attacher.ts';
import { AttachError } from './errors.ts';
import { execTool } from './exec.ts';
import type { Exec } from './exec.ts';
import { NbdAttacher, nbdSupport } from './nbd-attacher.ts';
import type { Support } from './nbd-attacher.ts';
import { NbdfuseAttacher } from './nbdfuse-attacher.ts';

export const ATTACHER_ENV = 'BRAID_ATTACHER';

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
  if (text === 'nbd' || text === 'nbdfuse') return text;
  throw new AttachError('INVALID_ARGUMENT', `${ATTACHER_ENV}=${JSON.stringify(text)}: use nbd, nbdfuse or auto`);
}

export async function selectAttacher(opts: SelectOptions): Promise<Attacher> {
  const exec = opts.exec ?? execTool;
  const choice = opts.choice ?? parseAttacherChoice((opts.env ?? process.env)[ATTACHER_ENV]);
  const make = (kind: AttacherKind): Attacher =>
    kind === 'nbd' ? new NbdAttacher({ exec, logger: opts.logger }) : new NbdfuseAttacher({ exec, logger: opts.logger });

  if (choice === 'nbdfuse') {
    opts.logger.info({ attacher: 'nbdfuse', reason: `forced by ${ATTACHER_ENV}` }, 'attaching volumes with nbdfuse + loop devices');
    return make('nbdfuse');
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
  opts.logger.info({ attacher: 'nbdfuse', reason: support.reason }, 'attaching volumes with nbdfuse + loop devices (no kernel NBD)');
  return make('nbdfuse');
}
