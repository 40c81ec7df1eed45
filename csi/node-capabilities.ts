/**
 * Linux capabilities of this process, from /proc/self/status (CapEff: a hex mask). The node
 * service asks only one question: may it grow an ext4 filesystem online? ext4_resize_begin
 * answers EPERM without CAP_SYS_RESOURCE, which some sandboxes and container runtimes drop even
 * for root, so a failed resize2fs is reported with that reason instead of as an internal error.
 */
import { readFile } from 'node:fs/promises';

/** linux/capability.h */
export const CAP_SYS_RESOURCE = 24;

/** The effective capability mask in a /proc/PID/status text; undefined when absent. */
export function parseEffectiveCapabilities(statusText: string): bigint | undefined {
  const line = statusText.split('\n').find((l) => l.startsWith('CapEff:'));
  const hex = line?.split(/\s+/)[1];
  return hex !== undefined && /^[0-9a-f]+$/i.test(hex) ? BigInt(`0x${hex}`) : undefined;
}

/** Whether this process has capability `cap` in its effective set (false when unknown). */
export async function hasCapability(cap: number): Promise<boolean> {
  const mask = parseEffectiveCapabilities(await readFile('/proc/self/status', 'utf8').catch(() => ''));
  return mask !== undefined && (mask & (1n << BigInt(cap))) !== 0n;
}
