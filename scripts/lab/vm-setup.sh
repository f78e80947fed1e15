#!/usr/bin/env bash
# Vagrant's provisioner in each lab VM (the Vagrantfile runs it as root):
# names the VM's NICs after scripts/lab/topology, makes a namespace for
# every other host the VM carries (the attacker in the client VM, the
# server in the customer VM) and moves that host's NICs into it, then runs
# scripts/lab/provision.sh for each host, in topology order: the script the
# namespace lab runs in its namespaces. Idempotent (vagrant provision).
#
#   vm-setup.sh VM
#
# Environment (from the Vagrantfile):
#   LAB_NICS              "MAC=IFNAME@HOST ..." for the VM's NICs
#   LAB_GRE_BACKEND       nsd --gre-backend on an edge VM
#   LAB_INSTALL_PACKAGES  1: install the lab's Debian packages first (the
#                         public debian/bookworm64 box; nfhost's box has them)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
vm=${1:?usage: vm-setup.sh VM}
say() { echo "vm-setup $vm: $*" >&2; }

if [[ ${LAB_INSTALL_PACKAGES:-0} == 1 ]]; then
  pkgs=(iproute2 nftables bird2 curl python3 hping3 iputils-ping tcpdump rsync)
  missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The lab starts BIRD with its own configuration.
  systemctl disable --now bird >/dev/null 2>&1 || true
fi
# Lab traffic never leaves through Vagrant's management NIC.
while ip route del default dev eth0 2>/dev/null; do :; done

# nic_by_mac MAC [NETNS]: the interface name with that MAC (in NETNS).
nic_by_mac() {
  local cmd=(ip -o link)
  [[ -n ${2:-} ]] && cmd=(ip -n "$2" -o link)
  "${cmd[@]}" | awk -v m="$1" '{for (i = 1; i < NF; i++) if ($i == "link/ether" && $(i + 1) == m) {sub(/:$/, "", $2); sub(/@.*/, "", $2); print $2}}'
}
for nic in ${LAB_NICS:-}; do
  mac=${nic%%=*} rest=${nic#*=}
  ifname=${rest%@*} host=${rest#*@}
  ns=
  [[ $host != "$vm" ]] && ns=$host
  if [[ -n $ns ]]; then
    [[ -e /run/netns/$ns ]] || ip netns add "$ns"
    [[ -n $(nic_by_mac "$mac" "$ns") ]] && continue # moved already
  fi
  cur=$(nic_by_mac "$mac")
  [[ -n $cur ]] || { echo "vm-setup: no NIC with MAC $mac (for $ifname on $host)" >&2; exit 1; }
  # Into the host's namespace first: its name may be taken in the VM's
  # (the client's and the attacker's links are both rtr).
  ipn=(ip)
  if [[ -n $ns ]]; then ip link set "$cur" netns "$ns"; ipn=(ip -n "$ns"); fi
  if [[ $cur != "$ifname" ]]; then
    "${ipn[@]}" link set "$cur" down
    "${ipn[@]}" link set "$cur" name "$ifname"
  fi
  say "$mac is $ifname on $host${ns:+ (namespace $ns)}"
done
if [[ -n $(topo_ctl "$vm") ]]; then
  ip link set ctl up
  ip addr replace "$(topo_ctl "$vm")/24" dev ctl
fi

router_ctl=$(topo_ctl "$(topo_hosts router | head -1)")
for host in $(topo_hosts); do
  [[ $(topo_host "$host" vm) == "$vm" ]] || continue
  env=(LAB_RUN=/run/nfhost-lab LAB_BIN=/vagrant/bin LAB_GRE=kernel LAB_NS_PREFIX=)
  case $(topo_host "$host" role) in
  router) env+=(LAB_CONSUL=/vagrant/bin/consul) ;;
  edge) env+=(LAB_NSD=1 LAB_CONSUL_ADDR="$router_ctl:8500" LAB_GRE_BACKEND="${LAB_GRE_BACKEND:-}") ;;
  esac
  if [[ $host == "$vm" ]]; then
    env "${env[@]}" "$here/provision.sh" "$host"
  else
    env "${env[@]}" nsenter --net="/run/netns/$host" -- "$here/provision.sh" "$host"
  fi
done
say "done"
