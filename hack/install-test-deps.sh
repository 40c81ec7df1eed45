#!/usr/bin/env bash
# Installs the Debian tools the tests and benchmarks drive as real NBD clients and servers,
# only when one is missing, so a developer machine that has them pays nothing.
set -euo pipefail

# tool → Debian package
declare -A PACKAGE_OF=(
  [qemu-img]=qemu-utils [qemu-io]=qemu-utils [qemu-nbd]=qemu-utils
  [nbdinfo]=libnbd-bin [nbdcopy]=libnbd-bin [nbdfuse]=libnbd-bin
  [nbdkit]=nbdkit [fio]=fio
  [mkfs.ext4]=e2fsprogs [mkfs.xfs]=xfsprogs [fusermount3]=fuse3 [losetup]=mount
  [qemu-system-x86_64]=qemu-system-x86 [cpio]=cpio
  [openssl]=openssl
)

missing=()
for tool in "${!PACKAGE_OF[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${PACKAGE_OF[$tool]}")
done
# The QEMU guest test (e2e/) boots Debian's kernel with an initramfs built from a static
# busybox; neither is a command on PATH, so they are checked as files.
compgen -G '/boot/vmlinuz-*' >/dev/null || missing+=(linux-image-amd64)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
# fio must have been built with the nbd engine (Debian's is).
if command -v fio >/dev/null 2>&1 && ! fio --enghelp 2>/dev/null | grep -qx $'\tnbd'; then
  echo "install-test-deps: this fio has no nbd engine; install Debian's fio" >&2
  exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0

packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
echo "install-test-deps: installing ${packages}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-test-deps: need root (or sudo) to install: ${packages}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
# shellcheck disable=SC2086
$sudo apt-get install -y -q --no-install-recommends ${packages} >/dev/null
echo "install-test-deps: done"
