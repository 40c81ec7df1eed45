/**
 * The volume context: what CreateVolume tells the node plugin (through the CO) about a volume.
 * The spec makes it immutable and opaque to the CO, and it is stored in every PersistentVolume,
 * so it stays small: where the volume is served. The volume ID is already its NBD export name;
 * the export key repeats it so the node plugin need not know that convention.
 */

/** The NBD export name of the volume on its node's engine. */
export const CONTEXT_EXPORT_NAME = 'braid.dev/export-name';

/** The NBD unix socket of the engine that serves the volume, on the volume's node. */
export const CONTEXT_NBD_SOCKET = 'braid.dev/nbd-socket';
