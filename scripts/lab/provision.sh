#!/usr/bin/env bash
# Configures one lab host from scripts/lab/topology, inside the host's own
# network namespace: the namespace lab runs it with `nsenter --net`, a VM
# (scripts/lab/vm-setup.sh, Vagrant's provisioner) in its root namespace or
# in the namespace of a host it carries. The interfaces must exist under
# their topology names. Idempotent: run it again and nothing changes.
#
#   provision.sh HOST
#
# By role:
#   all       addresses (links, addr lines), routes, lo up
#   router    forwarding, L4 ECMP hashing; BIRD 2 (BGP with the edges, ECMP
#             into the kernel, flowtab4 for FlowSpec); with LAB_CONSUL a
#             Consul server on the control network (VMs)
#   edge      nsd's BGP config ($LAB_RUN/bgp-HOST.json); with LAB_NSD=1
#             nsd itself (VMs; the namespace lab starts nsd in its own
#             namespace, with --host-netns)
#   customer  forwarding; the tenant's GRE tunnel: LAB_GRE=kernel (default)
#             with the kernel's own GRE (ip link add type gre) and a
#             routing table for traffic from the tenant's network;
#             LAB_GRE=nfcustomer with nfcustomer (kernels without GRE),
#             whose tunnel interface lives in the server's namespace
#             ($LAB_NS_PREFIX + server)
#
# Environment: LAB_RUN (configs, logs, pid files; /run/nfhost-lab),
# LAB_BIN (nsd, nsctl, nfcustomer; the repository's bin/), LAB_NS_PREFIX
# (how hosts' namespaces are named, for nfcustomer), LAB_BIRD_CTL.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
host=${1:?usage: provision.sh HOST}
role=$(topo_host "$host" role) || { echo "provision: no host $host in $topology" >&2; exit 1; }
run=${LAB_RUN:-/run/nfhost-lab}
bin=${LAB_BIN:-$(cd "$here/../.." && pwd)/bin}
mkdir -p "$run"
say() { echo "provision $host: $*" >&2; }

ip link set lo up
while read -r ifname addr _; do
  ip link set "$ifname" up
  ip addr replace "$addr" dev "$ifname"
done < <(topo_ends "$host")
while read -r h ifname addr; do
  [[ $h == "$host" ]] || continue
  ip addr replace "$addr" dev "$ifname"
done < <(topo addr)
while read -r h prefix via; do
  [[ $h == "$host" ]] || continue
  ip route replace "$prefix" via "$via"
done < <(topo route)

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

router() {
  sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1
  # A next hop whose link is down is not used.
  sysctl -qw net.ipv4.conf.all.ignore_routes_with_linkdown=1
  local ctl=${LAB_BIRD_CTL:-$run/bird.ctl} conf=$run/bird.conf rid
  rid=$(topo_ends "$host" | awk '{sub(/\/.*/, "", $2); print $2; exit}')
  {
    echo "router id $rid;"
    echo "log \"$run/bird.log\" all;"
    cat <<'BIRD'
protocol device { scan time 1; }
flow4 table flowtab4;
protocol kernel { ipv4 { import none; export all; }; merge paths on; learn off; }
BIRD
    topo bgp | awk -v h="$host" '$1 == h {print $2; exit}' | while read -r asn; do
      cat <<BIRD
template bgp edge {
  local as $asn;
  hold time 9; keepalive time 3; connect retry time 2; connect delay time 1; error wait time 1, 4;
  graceful restart on;
  ipv4 { import all; export none; };
  flow4 { table flowtab4; import all; export none; };
}
BIRD
    done
    # One session a peer, named after the peer host (edge1, edge2).
    topo bgp | while read -r h _ peer pasn; do
      [[ $h == "$host" ]] || continue
      local name
      name=$(awk -v a="$peer" '$1 == "link" {sub(/\/.*/, "", $5); sub(/\/.*/, "", $8); if ($5 == a) print $3; if ($8 == a) print $6}' "$topology")
      echo "protocol bgp ${name:-peer_${peer//./_}} from edge { neighbor $peer as $pasn; }"
    done
  } >"$conf.new"
  mv "$conf.new" "$conf"
  if alive "$run/bird.pid"; then
    birdc -s "$ctl" configure >/dev/null
  else
    # bird -f stays in the foreground: $! is bird's pid (the lab stops it by pid).
    bird -f -c "$conf" -s "$ctl" </dev/null >/dev/null 2>&1 &
    echo $! >"$run/bird.pid"
    for _ in $(seq 100); do birdc -s "$ctl" show status >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  say "BIRD (pid $(cat "$run/bird.pid"), $conf)"
  if [[ -n ${LAB_CONSUL:-} ]]; then
    local addr
    addr=$(topo_ctl "$host")
    if ! alive "$run/consul.pid"; then
      "$LAB_CONSUL" agent -dev -bind="$addr" -client="$addr" -node="$host" -dns-port=-1 -log-level=warn \
        </dev/null >>"$run/consul.log" 2>&1 &
      echo $! >"$run/consul.pid"
    fi
    for _ in $(seq 200); do curl -sf "http://$addr:8500/v1/status/leader" | grep -q : && break; sleep 0.2; done
    say "Consul server on $addr:8500 (pid $(cat "$run/consul.pid"))"
  fi
}

edge() {
  local asn peers
  asn=$(topo bgp | awk -v h="$host" '$1 == h {print $2; exit}')
  peers=$(topo bgp | awk -v h="$host" '$1 == h {printf "%s{\"address\": \"%s\", \"asn\": %s, \"passive\": true, \"hold_time\": \"9s\"}", n++ ? ", " : "", $3, $4}')
  echo "{\"asn\": $asn, \"peers\": [$peers]}" >"$run/bgp-$host.json"
  say "BGP config $run/bgp-$host.json"
  if [[ ${LAB_NSD:-0} == 1 ]]; then "$here/vm-nsd.sh" "$host" start; fi
}

customer() {
  sysctl -qw net.ipv4.ip_forward=1
  local name local_ remote address from metric peer nf_tunnels=() nf_routes=() nf_local=
  while read -r _ name local_ remote address from metric; do
    peer=$(python3 -c 'import ipaddress, sys; i = ipaddress.ip_interface(sys.argv[1]); print(i.ip + (-1 if int(i.ip) % 2 else 1))' "$address")
    case ${LAB_GRE:-kernel} in
    kernel)
      # The kernel's own GRE: the interoperability test of nsd's GRE.
      ip link show "$name" >/dev/null 2>&1 || ip link add "$name" type gre local "$local_" remote "$remote" ttl 64
      ip addr replace "$address" dev "$name"
      ip link set "$name" up
      # What comes from the tenant's network goes back through a tunnel
      # (table 100, the lowest metric of those up); the tunnels' own
      # packets follow the main table.
      ip route replace default via "$peer" dev "$name" metric "$metric" table 100
      while ip rule del from "$from" lookup 100 2>/dev/null; do :; done
      ip rule add from "$from" lookup 100 priority 100
      say "kernel GRE $name $local_ -> $remote, $address; from $from via $peer (metric $metric)"
      ;;
    nfcustomer)
      nf_local=$local_
      nf_tunnels+=(--tunnel "name=$name,local=$local_,remote=$remote,address=$address")
      nf_routes+=(--route "prefix=0.0.0.0/0,via=$peer,priority=$metric")
      ;;
    *) echo "provision: LAB_GRE must be kernel or nfcustomer, not ${LAB_GRE}" >&2; exit 1 ;;
    esac
  done < <(topo tunnel | awk -v h="$host" '$1 == h')
  if ((${#nf_tunnels[@]})); then
    # nfcustomer's tunnel interfaces live in the server's namespace, which
    # then routes for them: what comes out of a tunnel and is not for the
    # server (a reply-type health probe, from the edge's tunnel address to
    # its uplink) goes back through a tunnel.
    local server uplink
    server=${LAB_NS_PREFIX:-}$(topo_hosts server | head -1)
    nsenter --net="/run/netns/$server" sysctl -qw net.ipv4.ip_forward=1
    uplink=$(topo_ends "$host" | awk -v a="$nf_local" '{sub(/\/.*/, "", $2)} $2 == a {print $1}')
    "$bin/nfcustomer" --netns "${LAB_NS_PREFIX:-}$host" --uplink "$uplink" --router "$server" \
      "${nf_tunnels[@]}" "${nf_routes[@]}" >&2
  fi
}

case $role in
router | edge | customer) "$role" ;;
client | attacker | server) ;;
*) echo "provision: host $host has unknown role $role" >&2; exit 1 ;;
esac
say "done ($role)"
