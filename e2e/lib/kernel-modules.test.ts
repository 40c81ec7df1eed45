import { describe, expect, it } from 'vitest';
import { moduleLoadOrder, moduleName } from './kernel-modules.ts';

// The shape of Debian 6.1's modules.dep for what the guest needs (deps listed in modprobe's
// order: the last one is loaded first).
const DEP = `
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/ext4/ext4.ko.zst: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/arch/x86/crypto/crc32c-intel.ko:
`;

describe('moduleLoadOrder', () => {
  it('puts every module after all of its dependencies, each once', () => {
    const order = moduleLoadOrder(DEP, ['virtio_pci', 'virtio_blk', 'ext4']).map(moduleName);
    expect(new Set(order).size).toBe(order.length);
    const at = (m: string): number => order.indexOf(m);
    for (const dep of ['virtio', 'virtio_ring', 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev']) expect(at(dep)).toBeLessThan(at('virtio_pci'));
    expect(at('virtio_blk')).toBeGreaterThan(at('virtio_ring'));
    for (const dep of ['crc16', 'mbcache', 'jbd2']) expect(at(dep)).toBeLessThan(at('ext4'));
    expect(order).toHaveLength(10);
  });

  it('treats "-" and "_" alike, as modprobe does', () => {
    expect(moduleLoadOrder(DEP, ['crc32c_intel'])).toEqual(['kernel/arch/x86/crypto/crc32c-intel.ko']);
  });

  it('names a missing module and who needed it', () => {
    expect(() => moduleLoadOrder(DEP, ['btrfs'])).toThrow(/btrfs is not in modules.dep/);
    expect(() => moduleLoadOrder('a.ko: b.ko\n', ['a'])).toThrow(/b \(needed by a\)/);
  });

  it('refuses a cycle', () => {
    expect(() => moduleLoadOrder('a.ko: b.ko\nb.ko: a.ko\n', ['a'])).toThrow(/cycle/);
  });
});
