/**
 * Plugin parameters (StorageClass / VolumeSnapshotClass `parameters` in Kubernetes). Unknown
 * keys are INVALID_ARGUMENT, so a typo in a StorageClass fails loudly at the first PVC instead
 * of silently creating a volume without the feature. The one exception is the
 * `csi.storage.k8s.io/` prefix: the Kubernetes sidecars add PVC/PV/snapshot names under it when
 * started with --extra-create-metadata; they are informational and ignored.
 *
 * Volume parameters:
 *   dedup   "true" | "false" (default "false"): store identical 4 KiB blocks of the volume once.
 *           A clone inherits dedup from its source; the parameter applies to new empty volumes.
 *   dedupDomain  a name ([a-z0-9][a-z0-9._-]{0,127}); implies dedup. Dedup volumes match blocks
 *           only within their domain: give each tenant's StorageClass its own, so tenants cannot
 *           observe each other through dedup (docs/security.md).
 * Snapshot parameters: none.
 */
import { status } from '@grpc/grpc-js';
import type { StringMap } from './messages.ts';
import { CsiError } from './status.ts';

export const PARAM_DEDUP = 'dedup';
export const PARAM_DEDUP_DOMAIN = 'dedupDomain';
const DOMAIN_PATTERN = /^[a-z0-9][a-z0-9._-]{0,127}$/;

/** Keys the Kubernetes sidecars may add; never ours to interpret. */
export const KUBERNETES_METADATA_PREFIX = 'csi.storage.k8s.io/';

export interface VolumeParameters {
  dedup: boolean;
  /** '' for the pool's default domain. */
  dedupDomain: string;
}

export function parseVolumeParameters(params: StringMap, field = 'parameters'): VolumeParameters {
  rejectUnknown(params, [PARAM_DEDUP, PARAM_DEDUP_DOMAIN], field);
  const dedupDomain = params[PARAM_DEDUP_DOMAIN] ?? '';
  if (dedupDomain !== '' && !DOMAIN_PATTERN.test(dedupDomain)) {
    throw new CsiError(status.INVALID_ARGUMENT, `${field}.${PARAM_DEDUP_DOMAIN} must match [a-z0-9][a-z0-9._-]{0,127}`);
  }
  const dedup = parseBoolean(params[PARAM_DEDUP], `${field}.${PARAM_DEDUP}`, dedupDomain !== '');
  if (!dedup && dedupDomain !== '') throw new CsiError(status.INVALID_ARGUMENT, `${field}: ${PARAM_DEDUP_DOMAIN} needs dedup`);
  return { dedup, dedupDomain };
}

export function parseSnapshotParameters(params: StringMap, field = 'parameters'): void {
  rejectUnknown(params, [], field);
}

/** The reason `params` is not acceptable as volume parameters, or undefined. */
export function volumeParametersProblem(params: StringMap): string | undefined {
  try {
    parseVolumeParameters(params);
    return undefined;
  } catch (err) {
    if (err instanceof CsiError) return err.message;
    throw err;
  }
}

function rejectUnknown(params: StringMap, known: readonly string[], field: string): void {
  for (const key of Object.keys(params)) {
    if (known.includes(key) || key.startsWith(KUBERNETES_METADATA_PREFIX)) continue;
    const hint = known.length > 0 ? `known: ${known.join(', ')}` : 'none are supported';
    throw new CsiError(status.INVALID_ARGUMENT, `${field}: unknown parameter ${JSON.stringify(key)} (${hint})`);
  }
}

function parseBoolean(value: string | undefined, field: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new CsiError(status.INVALID_ARGUMENT, `${field} must be "true" or "false", not ${JSON.stringify(value)}`);
}
