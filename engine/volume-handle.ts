/**
 * A BlockDevice handle on one volume, as handed to a front end (one per NBD connection).
 * It only forwards to VolumeIo; its job is the handle count that keeps a volume from being
 * removed while a client is connected.
 */
import type { AllocationExtent, BlockDevice } from './block-device.ts';
import type { VolumeIo } from './volume-io.ts';
import type { VolumeState } from './volume-state.ts';

export class VolumeHandle implements BlockDevice {
  readonly #vol: VolumeState;
  readonly #io: VolumeIo;
  #closed = false;

  constructor(vol: VolumeState, io: VolumeIo) {
    this.#vol = vol;
    this.#io = io;
    vol.openHandles++;
  }

  get name(): string {
    return this.#vol.name;
  }

  get sizeBytes(): number {
    return this.#vol.sizeBytes;
  }

  get readOnly(): boolean {
    return this.#vol.readOnly;
  }

  read(offset: number, dest: Buffer): Promise<void> {
    return this.#io.read(this.#vol, offset, dest);
  }

  write(offset: number, src: Buffer, fua: boolean): Promise<void> {
    return this.#io.write(this.#vol, offset, src, fua);
  }

  flush(): Promise<void> {
    return this.#io.flush();
  }

  trim(offset: number, lengthBytes: number, fua: boolean): Promise<void> {
    return this.#io.trim(this.#vol, offset, lengthBytes, fua);
  }

  writeZeroes(offset: number, lengthBytes: number, opts: { fua: boolean; mayUnmap: boolean }): Promise<void> {
    return this.#io.writeZeroes(this.#vol, offset, lengthBytes, opts);
  }

  blockStatus(offset: number, lengthBytes: number, maxExtents: number): AllocationExtent[] {
    return this.#io.blockStatus(this.#vol, offset, lengthBytes, maxExtents);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#vol.openHandles--;
  }
}
