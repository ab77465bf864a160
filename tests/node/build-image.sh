#!/bin/bash
# Builds the test node: a Debian bookworm root with systemd as PID 1 (cgroup v2
# only, systemd's default), runc, crun, the CNI plugins and qemu-guest-agent, as
# an ext4 disk image OUT/node.img with its kernel OUT/vmlinuz and initramfs
# OUT/initrd.img. The tests boot it under qemu (tests/src/vm.rs) and cache it by
# this script's hash: a change here builds a new one.
#
#   build-image.sh OUT [MIRROR]
set -euo pipefail
out=${1:?usage: build-image.sh OUT [MIRROR]}
mirror=${2:-${DEBIAN_MIRROR:-http://deb.debian.org/debian}}
# apparmor: Debian's kernel enables it, and a Debian node has its tools (critest
# loads its profiles with sudo apparmor_parser).
packages=systemd,systemd-sysv,dbus,udev,kmod,procps,iproute2,iptables,ca-certificates,linux-image-amd64,qemu-guest-agent,runc,crun,containernetworking-plugins,apparmor,sudo

for tool in debootstrap mkfs.ext4; do
    command -v "$tool" >/dev/null || { echo "build-image.sh: $tool is missing (make deps)" >&2; exit 2; }
done
mkdir -p "$out"
work=$(mktemp -d "$out/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -20 "$work/debootstrap.log" >&2
    echo "build-image.sh: debootstrap from $mirror failed" >&2
    exit 1
}
echo crikit-node >"$root/etc/hostname"
printf '/dev/vda / ext4 rw,relatime 0 1\n' >"$root/etc/fstab"
# Nothing that runs on a timer or waits on a console: a getty on the serial
# console would hang up other writers of it.
for unit in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
    fstrim.timer e2scrub_reap.service systemd-pstore.service getty@tty1.service \
    serial-getty@ttyS0.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# The tests' files come over 9p, mounted by the guest agent's commands.
mkdir -p "$root/mnt/share"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)
cp "$kernel" "$work/vmlinuz"
cp "$initrd" "$work/initrd.img"
mkfs.ext4 -q -d "$root" -L crikit-node "$work/node.img" 3G
mv "$work/vmlinuz" "$work/initrd.img" "$out/"
mv "$work/node.img" "$out/node.img"
