#!/usr/bin/env bash
# Builds nfhost's Vagrant box locally (Vagrant Cloud is not needed), caches
# it and adds it to Vagrant. Prints the box name for `NFHOST_BOX=`.
#
#   scripts/vagrant-box.sh            build once, `vagrant box add` it; later calls return at once
#   scripts/vagrant-box.sh --file     only build; print the .box file
#
# The box: Debian 12 (debootstrap --variant=minbase from deb.debian.org) with
# Debian's cloud kernel from bookworm-security ($NFHOST_BOX_KERNEL_PKG,
# default the newest linux-image-6.12.*-cloud-amd64: tcx, which the eBPF GRE
# datapath attaches with, is 6.6+; 6.1 would do only for the kernel GRE
# backend), systemd, openssh-server, sudo, a `vagrant` user with Vagrant's
# public insecure key, systemd-networkd answering DHCP on eth0, and the
# Debian packages the lab's provisioning scripts use (iproute2, nftables,
# bird2, curl, python3, hping3, ...). No Go: binaries come from the host's
# bin/ through the synced folder. One ext4 partition booted by extlinux,
# packed as a vagrant-libvirt box (box.img qcow2 + metadata.json +
# Vagrantfile). About 250 MB; a few minutes the first time (the .debs are
# cached too), then nothing.
#
# Cache: $NFHOST_CACHE/box or ~/.cache/nfhost/box, shared by every clone.
set -euo pipefail
# FORMAT changes whenever the image's contents change, so a box built by an
# older script is neither used nor confused with the new one.
FORMAT=1
root_dir=$(cd "$(dirname "$0")/.." && pwd)
cache=${NFHOST_CACHE:-$HOME/.cache/nfhost}/box
mirror=${NFHOST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
security=${NFHOST_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
mode=${1:-add}
packages=(
  systemd-sysv udev dbus openssh-server sudo ca-certificates netbase procps kmod
  iproute2 nftables bird2 curl python3 hping3 iputils-ping tcpdump rsync less
)

log() { echo "vagrant-box: $*" >&2; }

kpkg=${NFHOST_BOX_KERNEL_PKG:-}
if [[ -z $kpkg ]]; then
  # Offline and fast: a box already built at this format will do.
  for f in "$cache"/nfhost-bookworm-*-f$FORMAT.box; do
    [[ -s $f ]] && { kpkg=$(basename "$f" -f$FORMAT.box); kpkg=linux-image-${kpkg#nfhost-bookworm-}; break; }
  done
fi
if [[ -z $kpkg ]]; then
  kpkg=$(apt-cache pkgnames linux-image-6.12 2>/dev/null | grep -E '^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64$' | sort -V | tail -1 || true)
  [[ -n $kpkg ]] || { log "apt knows no linux-image-6.12.*-cloud-amd64 (bookworm-security; run apt-get update)"; exit 1; }
fi
kver=${kpkg#linux-image-}
# The Vagrantfile's default box name; $cache/added says which build it is.
name=nfhost/bookworm
box=$cache/nfhost-bookworm-$kver-f$FORMAT.box

add() {
  if [[ $mode == --file ]]; then echo "$box"; return; fi
  command -v vagrant >/dev/null || { log "needs vagrant (apt-get install vagrant vagrant-libvirt)"; exit 1; }
  if [[ $(cat "$cache/added" 2>/dev/null) != "$box" ]] || [[ $(vagrant box list 2>/dev/null) != *"$name "* ]]; then
    log "vagrant box add $name ($box)"
    vagrant box add --force --name "$name" "$box" >&2
    echo "$box" >"$cache/added"
  fi
  echo "$name"
}

mkdir -p "$cache/debs"
exec 9>"$cache/.lock"
flock 9
if [[ -s $box ]]; then add; exit 0; fi

[[ $(id -u) -eq 0 ]] || { log "run as root (debootstrap, loop mount)"; exit 1; }
need=()
for t in debootstrap:debootstrap qemu-img:qemu-utils extlinux:extlinux sfdisk:fdisk mkfs.ext4:e2fsprogs; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
[[ -f /usr/lib/EXTLINUX/mbr.bin ]] || need+=(extlinux)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
pubkey=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -1 || true)
[[ -s $pubkey ]] || { log "cannot find Vagrant's public insecure key (keys/vagrant.pub in the vagrant gem)"; exit 1; }

work=$(mktemp -d /tmp/nfhost-box.XXXXXX)
mnt=$work/mnt
cleanup() {
  for m in "$work/root/proc" "$work/root/sys" "$work/root/dev/pts" "$work/root/dev" "$mnt"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m"
  done
  rm -rf "$work"
}
trap cleanup EXIT
r=$work/root

t0=$(date +%s)
log "debootstrap bookworm (minbase + ${#packages[@]} packages) from $mirror"
debootstrap --variant=minbase --cache-dir="$cache/debs" --include="$(IFS=,; echo "${packages[*]}")" \
  bookworm "$r" "$mirror" >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }

cat >"$r/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
# No service starts inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$r/usr/sbin/policy-rc.d"; chmod +x "$r/usr/sbin/policy-rc.d"
mount -t proc proc "$r/proc"; mount -t sysfs sys "$r/sys"
mount --bind /dev "$r/dev"; mount --bind /dev/pts "$r/dev/pts"
# A small initrd: only what finds a virtio disk.
mkdir -p "$r/etc/initramfs-tools/conf.d"
echo 'MODULES=list' >"$r/etc/initramfs-tools/conf.d/nfhost"
printf '%s\n' virtio_pci virtio_blk virtio_scsi sd_mod ahci ext4 >"$r/etc/initramfs-tools/modules"
# The .debs apt fetches are cached beside debootstrap's.
mkdir -p "$r/var/cache/apt/archives"
mount --bind "$cache/debs" "$r/var/cache/apt/archives"
log "installing $kpkg from bookworm-security"
chroot "$r" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $kpkg" \
  >"$work/kernel.log" 2>&1 || { tail -20 "$work/kernel.log" >&2; exit 1; }
umount "$r/var/cache/apt/archives"
for m in dev/pts dev sys proc; do umount "$r/$m"; done
rm -f "$r/usr/sbin/policy-rc.d"

log "configuring: vagrant user, sshd, networkd, serial console"
echo nfhost >"$r/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 nfhost\n' >"$r/etc/hosts"
echo 'LABEL=nfhost-root / ext4 defaults,noatime 0 1' >"$r/etc/fstab"
chroot "$r" useradd -m -s /bin/bash -G sudo vagrant
echo vagrant:vagrant | chroot "$r" chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' >"$r/etc/sudoers.d/vagrant"; chmod 440 "$r/etc/sudoers.d/vagrant"
install -d -m 700 -o 1000 -g 1000 "$r/home/vagrant/.ssh"
install -m 600 -o 1000 -g 1000 "$pubkey" "$r/home/vagrant/.ssh/authorized_keys"
printf 'UseDNS no\nGSSAPIAuthentication no\n' >"$r/etc/ssh/sshd_config.d/vagrant.conf"
cat >"$r/etc/systemd/network/10-eth0.network" <<EOF
[Match]
Name=eth0
[Network]
DHCP=ipv4
[DHCPv4]
ClientIdentifier=mac
EOF
ln -sf /lib/systemd/system/systemd-networkd.service "$r/etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
# Vagrant waits for sshd, not for the network to be "online".
ln -sf /dev/null "$r/etc/systemd/system/systemd-networkd-wait-online.service"
# The lab's provisioning starts BIRD with its own configuration.
rm -f "$r/etc/systemd/system/multi-user.target.wants/bird.service"
# Nothing periodic competing for an emulated CPU.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
  ln -sf /dev/null "$r/etc/systemd/system/$u"
done
# Every VM gets its own machine-id (and so DHCP identity) at first boot.
: >"$r/etc/machine-id"; rm -f "$r/var/lib/dbus/machine-id"
rm -rf "$r/var/lib/apt/lists"/* "$r/var/cache/apt"/*.bin "$r/usr/share/doc"/* "$r/usr/share/man"/* "$r/usr/share/locale"/*
mkdir -p "$r/vagrant"

vmlinuz=$(cd "$r/boot" && ls vmlinuz-* | head -1); initrd=$(cd "$r/boot" && ls initrd.img-* | head -1)
mkdir -p "$r/boot/extlinux"
cat >"$r/boot/extlinux/extlinux.conf" <<EOF
DEFAULT nfhost
TIMEOUT 1
PROMPT 0
LABEL nfhost
  LINUX /boot/$vmlinuz
  INITRD /boot/$initrd
  APPEND root=LABEL=nfhost-root ro console=ttyS0 net.ifnames=0 biosdevname=0 quiet
EOF

log "image: ext4 (populated with mkfs -d), extlinux, qcow2"
size_mib=4096 off_mib=1
truncate -s ${size_mib}M "$work/disk.raw"
echo "${off_mib}MiB,,L,*" | sfdisk -q "$work/disk.raw" >/dev/null
# syslinux reads no 64bit ext4.
mkfs.ext4 -q -F -L nfhost-root -O ^64bit,^metadata_csum -E offset=$((off_mib * 1048576)) -d "$r" \
  "$work/disk.raw" $(((size_mib - off_mib) * 1024))k
mkdir -p "$mnt"
mount -o loop,offset=$((off_mib * 1048576)) "$work/disk.raw" "$mnt"
extlinux --install "$mnt/boot/extlinux" >/dev/null 2>&1
umount "$mnt"
dd if=/usr/lib/EXTLINUX/mbr.bin of="$work/disk.raw" bs=440 count=1 conv=notrunc status=none
mkdir -p "$work/box"
qemu-img convert -O qcow2 "$work/disk.raw" "$work/box/box.img"
echo "{\"provider\": \"libvirt\", \"format\": \"qcow2\", \"virtual_size\": $((size_mib / 1024))}" >"$work/box/metadata.json"
cat >"$work/box/Vagrantfile" <<'EOF'
# nfhost's locally built box (scripts/vagrant-box.sh): Debian 12 with the
# cloud kernel on an emulated CPU (KVM guests hang on the build machine).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.driver = "qemu"
    lv.disk_bus = "virtio"
    lv.nic_model_type = "virtio"
  end
end
EOF
echo "$kver" >"$work/box/kernel"
tar -C "$work/box" -cf "$box.tmp" metadata.json Vagrantfile kernel box.img
mv "$box.tmp" "$box"
log "built $box ($(du -h "$box" | cut -f1), $(($(date +%s) - t0)) s)"
add
