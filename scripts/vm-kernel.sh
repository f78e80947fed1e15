#!/usr/bin/env bash
# Builds the small test VM that plays a Linux customer router (kernel GRE,
# which the test machine's own kernel lacks) and caches it. Prints the
# directory holding vmlinuz and initrd.gz.
#
#   scripts/vm-kernel.sh [CACHE_DIR]
#
# The kernel is Debian's linux-image-<version>-cloud-amd64 (fetched with
# `apt-get download`, the version the linux-image-cloud-amd64 metapackage
# points at, or $NFHOST_VM_KERNEL_PKG); the initrd holds busybox-static,
# the host's iproute2 `ip` with its libraries (busybox's ip cannot make GRE
# devices), the modules in $MODULES with their dependencies resolved from
# modules.dep, and an /init that
#   - loads the modules in dependency order,
#   - configures eth0 from the kernel command line:
#       nfhost.ip=ADDR/LEN nfhost.gw=GW [nfhost.forward=1]
#   - with nfhost.root=TAG on the command line, mounts the host's root
#     filesystem, exported by virtiofsd under TAG, read-only at /newroot,
#     with tmpfs on /run /tmp /var /dev/shm, proc, sysfs, devtmpfs and a
#     bpffs at /sys/fs/bpf, the host root once more (no submounts) at
#     /run/host, and runs every command chrooted there: the host's own
#     tools (ip, nft, ping, nsenter, python3) and test binaries run on
#     this kernel (internal/vmtest.RunTests),
#   - prints "nfhost-vm: ready" on the console (ttyS0),
#   - runs commands it reads from the virtio-serial port "ctl"
#     (/dev/vport*p1), one per line, with `sh -c`, and after each writes its
#     output and a line "\036rc=N" (internal/vmtest speaks this).
# CACHE_DIR defaults to $NFHOST_CACHE/vm or ~/.cache/nfhost/vm, shared by
# every clone; a later call returns at once. Needs dpkg-deb, depmod (kmod),
# busybox-static and cpio/gzip; about 10 s the first time.
set -euo pipefail
# FORMAT changes whenever /init or the initrd's layout changes, so a cache
# built by an older script is not used.
FORMAT=7
MODULES=${NFHOST_VM_MODULES:-"virtio_pci virtio_net virtio_console ip_gre"}
# Loaded too when the kernel has them (a kernel built with them in, or
# without them, is no error): what the kernel tests of this repository
# need when they run inside the VM.
OPTIONAL_MODULES=${NFHOST_VM_OPTIONAL_MODULES:-"fuse virtiofs veth tun dummy ifb nf_tables nf_conntrack nft_ct nft_limit
  nft_objref nft_reject_inet nft_fib_inet nft_hash nft_numgen nft_quota nft_log nft_synproxy nft_connlimit nft_nat nft_masq
  nft_compat xt_TCPMSS nft_socket sch_ingress cls_bpf act_bpf"}
cache=${1:-${NFHOST_CACHE:-$HOME/.cache/nfhost}/vm}

pkg=${NFHOST_VM_KERNEL_PKG:-}
if [[ -z $pkg ]]; then
  # Offline and fast: any kernel already cached at this format will do.
  for d in "$cache"/*-f$FORMAT; do
    if [[ -s $d/vmlinuz && -s $d/initrd.gz ]]; then
      echo "$d"
      exit 0
    fi
  done
  pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
  if [[ -z $pkg ]]; then
    echo "vm-kernel: apt knows no linux-image-cloud-amd64 (run apt-get update)" >&2
    exit 1
  fi
fi
# A metapackage (linux-image-6.12-cloud-amd64) names the kernel package
# it depends on.
real=$(apt-cache depends "$pkg" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[[ -n $real ]] && pkg=$real
kver=${pkg#linux-image-}
out=$cache/$kver-f$FORMAT
# One build at a time (tests in several packages may ask at once); the
# second finds the first's result.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [[ -s $out/vmlinuz && -s $out/initrd.gz ]]; then
  echo "$out"
  exit 0
fi
for tool in dpkg-deb depmod cpio gzip; do
  command -v "$tool" >/dev/null || { echo "vm-kernel: needs $tool (scripts/deps.sh installs it)" >&2; exit 1; }
done
# busybox-static installs a static /bin/busybox (the initrd has no libc
# of its own except what `ip` brings).
busybox=/bin/busybox
[[ -x $busybox ]] || { echo "vm-kernel: needs busybox-static" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "vm-kernel: fetching $pkg" >&2
(cd "$work" && apt-get download -q "$pkg" >&2 2>/dev/null) || (cd "$work" && apt-get download "$pkg" >&2)
dpkg-deb -x "$work"/"$pkg"_*.deb "$work/k"
mods=$work/k/lib/modules/$kver
depmod -b "$work/k" "$kver"

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc,lib/modules,lib64,lib/x86_64-linux-gnu,run,var/www}
cp "$busybox" "$root/bin/busybox"
# iproute2's ip and the libraries it links (ldd lists them).
# /usr/local/bin: busybox --install would replace it anywhere else.
mkdir -p "$root/usr/local/bin"
cp /usr/bin/ip "$root/usr/local/bin/ip"
for lib in $(ldd /usr/bin/ip | awk '/=>/{print $3} /ld-linux/{print $1}'); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
# Modules in load order: each module's dependencies (modules.dep lists
# them nearest first), deepest first, then the module; no duplicates.
order=()
add() {
  local m=$1 seen
  for seen in "${order[@]:-}"; do [[ $seen == "$m" ]] && return; done
  order+=("$m")
}
for name in $MODULES $OPTIONAL_MODULES; do
  line=$(grep -E "/$name\.ko(\.[a-z]+)?:" "$mods/modules.dep" || true)
  if [[ -z $line ]]; then
    # Built in (6.12 has virtio_pci in the kernel): nothing to load.
    grep -qE "/$name\.ko" "$mods/modules.builtin" 2>/dev/null && continue
    [[ " $MODULES " == *" $name "* ]] && { echo "vm-kernel: module $name not in $pkg" >&2; exit 1; }
    echo "vm-kernel: $pkg has no module $name (skipped)" >&2
    continue
  fi
  mod=${line%%:*}
  deps=(${line#*:})
  for ((i = ${#deps[@]} - 1; i >= 0; i--)); do add "${deps[i]}"; done
  add "$mod"
done
: >"$root/etc/modules"
for m in "${order[@]}"; do
  mkdir -p "$root/lib/modules/$kver/$(dirname "$m")"
  cp "$mods/$m" "$root/lib/modules/$kver/$m"
  echo "$m" >>"$root/etc/modules"
done
# Every netfilter and traffic-control module too, with a modules.dep and
# /sbin/modprobe (busybox): the kernel loads what a test asks for on
# demand (an nft expression, a qdisc), as on a real host. The chroot has
# no modules of this kernel, so autoloading is the initrd's.
for d in kernel/net/netfilter kernel/net/ipv4/netfilter kernel/net/ipv6/netfilter kernel/net/sched; do
  [[ -d $mods/$d ]] || continue
  (cd "$mods" && find "$d" -name '*.ko*') | while read -r m; do
    mkdir -p "$root/lib/modules/$kver/$(dirname "$m")"
    cp -n "$mods/$m" "$root/lib/modules/$kver/$m"
  done
done
cp "$mods"/modules.builtin* "$mods"/modules.order "$root/lib/modules/$kver/" 2>/dev/null || true
depmod -b "$root" "$kver"
mkdir -p "$root/sbin"
ln -s /bin/busybox "$root/sbin/modprobe"

cat >"$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /etc/modules); do
  insmod /lib/modules/$(uname -r)/$m || echo "nfhost-vm: insmod $m failed"
done
ip link set lo up
root=
for w in $(cat /proc/cmdline); do
  case $w in
    nfhost.root=*) root=${w#nfhost.root=} ;;
    nfhost.ip=*) addr=${w#nfhost.ip=} ;;
    nfhost.gw=*) gw=${w#nfhost.gw=} ;;
    nfhost.forward=1) sysctl -qw net.ipv4.ip_forward=1 ;;
  esac
done
if [ -n "$root" ]; then
  # The host's root, read-only, with this VM's own scratch space.
  mkdir -p /newroot
  if ! mount -t virtiofs -o ro "$root" /newroot; then
    echo "nfhost-vm: mount virtiofs $root failed"
    root=
  else
    mount -t tmpfs -o mode=755 run /newroot/run
    mkdir -p /newroot/run/host /newroot/run/netns
    mount -o bind,ro /newroot /newroot/run/host
    mount -t tmpfs -o mode=1777 tmp /newroot/tmp
    mount -t tmpfs -o mode=755 var /newroot/var
    mkdir -p /newroot/var/tmp /newroot/var/lib /newroot/var/run && chmod 1777 /newroot/var/tmp
    mount -t proc proc /newroot/proc
    mount -t sysfs sys /newroot/sys
    mount -t bpf bpf /newroot/sys/fs/bpf
    mount -t devtmpfs dev /newroot/dev
    mkdir -p /newroot/dev/shm /newroot/dev/pts
    mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
    mount -t devpts devpts /newroot/dev/pts
    # The tests' own view: no interfaces but lo, the kernel's defaults.
    ip link set eth0 down 2>/dev/null
    echo "nfhost-vm: host root at /newroot ($(cat /proc/sys/kernel/osrelease))"
  fi
fi
i=0
while [ -z "$root" ] && [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
[ -n "$root" ] || ip link set eth0 up
[ -n "$addr" ] && ip addr add "$addr" dev eth0
[ -n "$gw" ] && ip route add default via "$gw"
port=
i=0
while [ -z "$port" ] && [ $i -lt 100 ]; do
  for p in /dev/vport*p1; do [ -e "$p" ] && port=$p; done
  [ -z "$port" ] && sleep 0.1
  i=$((i+1))
done
# The control loop. The port opens once (it is exclusive); a read returns
# end-of-file while the host side is not connected, so retry.
exec 3<>"$port"
echo "nfhost-vm: ready (ctl $port)"
while true; do
  while read -r line <&3; do
    # busybox sh runs its own applets before anything on PATH: the alias
    # makes `ip` iproute2's (it must be on a line before the command).
    if [ -n "$root" ]; then
      chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp \
        /bin/sh -c "cd / && $line" </dev/null >&3 2>&1
    else
      sh -c "alias ip=/usr/local/bin/ip
$line" </dev/null >&3 2>&1
    fi
    printf '\n\036rc=%d\n' $? >&3
  done
  sleep 0.1
done
INIT
chmod +x "$root/init"

mkdir -p "$out.tmp"
cp "$work/k/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$out.tmp/initrd.gz"
echo "$kver" >"$out.tmp/version"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
