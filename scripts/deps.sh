#!/usr/bin/env bash
# Installs what nfhost's tests and lab need on a fresh Debian machine:
# Debian packages (only those missing) and the Consul binary (built from the
# Go module proxy and cached under .cache/). Idempotent; seconds when done.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

declare -A pkg_for=(
  [ip]=iproute2 [nft]=nftables [ping]=iputils-ping [nsenter]=util-linux
  [iperf3]=iperf3 [tcpdump]=tcpdump [ethtool]=ethtool [curl]=curl [python3]=python3
  [clang]=clang [llvm-strip]=llvm [bpftool]=bpftool
  [promtool]=prometheus [prometheus]=prometheus [tmux]=tmux
  [qemu-system-x86_64]=qemu-system-x86 [cpio]=cpio [depmod]=kmod
  [bird]=bird2 [birdc]=bird2 [hping3]=hping3
  [vagrant]=vagrant
)
missing=()
for cmd in "${!pkg_for[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg_for[$cmd]}")
done
# vagrant validate (e2e TestVagrantfile) reads the Vagrantfile's libvirt parts.
ls -d /usr/share/rubygems-integration/all/gems/vagrant-libvirt-* >/dev/null 2>&1 || missing+=(vagrant-libvirt)
# BPF headers for make generate.
[[ -f /usr/include/bpf/bpf_helpers.h ]] || missing+=(libbpf-dev)
# The test VM's initrd (scripts/vm-kernel.sh) needs the static busybox.
[[ -x /bin/busybox ]] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: missing ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "deps: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${missing[@]}" | sort -u) >/dev/null
fi
"$root/scripts/install-consul.sh" >/dev/null
echo "deps: ok (consul: $("$root/scripts/install-consul.sh"))" >&2
