/**
 * What the CLI prints. Human output is for people and may change; JSON output is a contract
 * (CLI.md): keys are only ever added, never renamed or removed.
 */
import { formatSize } from '../engine/size.ts';
import type { PoolStats, SnapshotInfo, VolumeInfo } from '../engine/volume-manager.ts';

/** The NBD URI of an export: what qemu-img, nbdinfo and nbd-client take. */
export function nbdUri(nbdSocketPath: string, exportName: string): string {
  return `nbd+unix:///${exportName}?socket=${nbdSocketPath}`;
}

/** Rows as aligned columns; columns listed in `rightAligned` (numbers) are right-aligned. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[], rightAligned: ReadonlySet<number>): string {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((cell, i) => {
        const width = widths[i] ?? 0;
        return rightAligned.has(i) ? cell.padStart(width) : cell.padEnd(width);
      })
      .join('  ')
      .trimEnd();
  return [header, ...rows].map(line).join('\n') + '\n';
}

export function formatVolumeTable(volumes: readonly VolumeInfo[]): string {
  const rows = volumes.map((v) => [v.name, formatSize(v.sizeBytes), formatSize(v.allocatedBytes)]);
  return formatTable(['NAME', 'SIZE', 'ALLOCATED'], rows, new Set([1, 2]));
}

/** `braid volume ls --json`: an object, so that keys (paging, snapshots) can be added later. */
export function volumesJson(volumes: readonly VolumeInfo[]): string {
  const list = volumes.map((v) => ({
    name: v.name,
    sizeBytes: v.sizeBytes,
    allocatedBytes: v.allocatedBytes,
    createdAt: new Date(v.createdAtMs).toISOString(),
    openHandles: v.openHandles,
  }));
  return JSON.stringify({ volumes: list }, null, 2) + '\n';
}

export function formatSnapshotTable(snapshots: readonly SnapshotInfo[]): string {
  const rows = snapshots.map((s) => [s.name, s.sourceVolume, formatSize(s.sizeBytes), formatTimestamp(s.createdAtMs)]);
  return formatTable(['NAME', 'SOURCE', 'SIZE', 'CREATED'], rows, new Set([2]));
}

/** `braid snapshot ls --json`: an object, like `volume ls --json`, so keys can be added later. */
export function snapshotsJson(snapshots: readonly SnapshotInfo[]): string {
  const list = snapshots.map((s) => ({
    name: s.name,
    sourceVolume: s.sourceVolume,
    sizeBytes: s.sizeBytes,
    allocatedBytes: s.allocatedBytes,
    createdAt: new Date(s.createdAtMs).toISOString(),
  }));
  return JSON.stringify({ snapshots: list }, null, 2) + '\n';
}

/** A time for people, in UTC to the second: 2024-05-01 12:34:56Z. */
export function formatTimestamp(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').replace(/\.\d{3}Z$/, 'Z');
}

/**
 * `braid stats --json`: the eight keys of CLI.md first, in its order, then extras. The volume
 * count is `volumeCount`, because CLI.md keeps `volumes` for per-volume detail.
 */
export function statsJson(s: PoolStats): string {
  const out = {
    logicalBytes: s.logicalBytes,
    physicalBytes: s.physicalBytes,
    savedByClonesBytes: s.savedByClonesBytes,
    savedByDedupBytes: s.savedByDedupBytes,
    deadBytes: s.deadBytes,
    capacityBytes: s.capacityBytes,
    writesPerBatch: s.writesPerBatch,
    flushesPerFdatasync: s.flushesPerFdatasync,
    batches: s.batches,
    fdatasyncs: s.fdatasyncs,
    volumeCount: s.volumes,
    readOnly: s.readOnly,
    ...(s.readOnlyReason === undefined ? {} : { readOnlyReason: s.readOnlyReason }),
    segments: s.segments,
    segmentsCleaned: s.segmentsCleaned,
    blocksRelocated: s.blocksRelocated,
  };
  return JSON.stringify(out, null, 2) + '\n';
}

export function formatStats(s: PoolStats): string {
  // The pool reports capacity 0 when none was set (`serve` without --capacity).
  const capacity =
    s.capacityBytes > 0
      ? `${formatSize(s.capacityBytes)} (${((100 * s.physicalBytes) / s.capacityBytes).toFixed(1)}% used)`
      : 'not set (bounded by the disk)';
  const rows: [string, string][] = [
    ['volumes', String(s.volumes)],
    ['logical (mapped)', formatSize(s.logicalBytes)],
    ['physical (on disk)', formatSize(s.physicalBytes)],
    ['saved by clones', formatSize(s.savedByClonesBytes)],
    ['saved by dedup', formatSize(s.savedByDedupBytes)],
    ['dead (to clean)', formatSize(s.deadBytes)],
    ['capacity', capacity],
    ['writes per batch', s.writesPerBatch.toFixed(2)],
    ['flushes per fdatasync', s.flushesPerFdatasync.toFixed(2)],
    ['batches / fdatasyncs', `${s.batches} / ${s.fdatasyncs}`],
    ['log segments', String(s.segments)],
    ['cleaner', `${s.segmentsCleaned} segments freed, ${s.blocksRelocated} blocks moved`],
    ['state', s.readOnly ? `READ-ONLY: ${s.readOnlyReason ?? 'after an I/O error (see the engine log)'}` : 'read-write'],
  ];
  const width = Math.max(...rows.map(([label]) => label.length));
  return rows.map(([label, value]) => `${label.padEnd(width)}  ${value}`).join('\n') + '\n';
}
