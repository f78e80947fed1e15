#!/usr/bin/env bash
# The nfhost namespace lab (make lab). Also the provisioning script of the
# Vagrantfile, so it is exercised even where Vagrant cannot boot.
#
#   lab-attacker 192.0.2.66 ─┐
#                            │ att
#   lab-client 192.0.2.1 ── eth0 ═══ uplink [XDP] ── 192.0.2.2 lab-edge1 (nsd --host-netns lab-edge1)
#                                                 │ nfv… ═ host0
#                                                 └─ nf-demo: 203.0.113.1 on lo
#
# Starts a Consul dev agent on 127.0.0.1:18500, runs nsd for the edge,
# writes a tenant with nsctl, pings into the tenant namespace from the
# client and back, has the tenant block and unblock ICMP with a firewall
# rule, floods the tenant from the attacker and stops the flood in XDP with
# a DoS signature while the client keeps working, prints verdicts, and
# removes everything it made.
# KEEP=1 leaves the lab running (clean up with scripts/lab.sh --down).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin
work=${LAB_WORK:-/tmp/nfhost-lab}
http_port=${LAB_CONSUL_PORT:-18500}
client=lab-client edge=lab-edge1 attacker=lab-attacker tenant=demo nsprefix=nf-
consul=$("$root/scripts/install-consul.sh")

in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" -- "$@"; }
ctl() { "$bin/nsctl" --consul-addr "127.0.0.1:$http_port" "$@"; }

down() {
  [[ -f $work/nsd.pid ]] && kill "$(cat "$work/nsd.pid")" 2>/dev/null || true
  [[ -f $work/consul.pid ]] && kill "$(cat "$work/consul.pid")" 2>/dev/null || true
  [[ -f $work/ntp.pid ]] && kill "$(cat "$work/ntp.pid")" 2>/dev/null || true
  sleep 0.3
  for ns in "$client" "$edge" "$attacker" "$nsprefix$tenant"; do
    ip netns del "$ns" 2>/dev/null || true
  done
  # nsd leaves its XDP program pinned on purpose; the lab removes it.
  rm -rf "/sys/fs/bpf/nfhost/$edge"
  rm -f "$work"/*.pid "$work/ntp-received"
}

if [[ ${1:-} == --down ]]; then down; exit 0; fi
[[ $(id -u) -eq 0 ]] || { echo "lab: run as root (it creates network namespaces)" >&2; exit 1; }
[[ -x $bin/nsd && -x $bin/nsctl ]] || { echo "lab: run 'make build' first" >&2; exit 1; }
mkdir -p "$work"
down
[[ ${KEEP:-0} == 1 ]] || trap down EXIT

step() { printf '\n== %s\n' "$*"; }
verdict() { if "${@:2}" >/dev/null 2>&1; then echo "PASS  $1"; else echo "FAIL  $1"; failed=1; fi; }
failed=0

step "consul dev agent on 127.0.0.1:$http_port"
"$consul" agent -dev -bind=127.0.0.1 -client=127.0.0.1 -node=nfhost-lab \
  -http-port="$http_port" -dns-port=-1 -grpc-port=-1 -grpc-tls-port=-1 \
  -serf-lan-port=18301 -serf-wan-port=18302 -server-port=18300 -log-level=warn \
  >"$work/consul.log" 2>&1 &
echo $! >"$work/consul.pid"
for _ in $(seq 100); do ctl tenant list >/dev/null 2>&1 && break; sleep 0.1; done

step "namespaces: $client <-> $edge"
ip netns add "$client"; ip netns add "$edge"
ip link add eth0 netns "$client" type veth peer name uplink netns "$edge"
in_ns "$client" ip addr add 192.0.2.1/24 dev eth0
in_ns "$edge" ip addr add 192.0.2.2/24 dev uplink
for ns in "$client" "$edge"; do in_ns "$ns" ip link set lo up; done
in_ns "$client" ip link set eth0 up; in_ns "$edge" ip link set uplink up
in_ns "$client" ip route add 203.0.113.0/24 via 192.0.2.2
in_ns "$edge" ip route add default via 192.0.2.1

step "namespace $attacker 192.0.2.66, behind the client"
ip netns add "$attacker"
ip link add eth0 netns "$attacker" type veth peer name att netns "$client"
in_ns "$attacker" ip addr add 192.0.2.66/32 dev eth0
in_ns "$client" ip addr add 192.0.2.65/32 dev att
in_ns "$attacker" ip link set lo up; in_ns "$attacker" ip link set eth0 up; in_ns "$client" ip link set att up
in_ns "$attacker" ip route add 192.0.2.65 dev eth0
in_ns "$attacker" ip route add default via 192.0.2.65
in_ns "$client" ip route add 192.0.2.66/32 dev att
in_ns "$client" sysctl -qw net.ipv4.ip_forward=1
in_ns "$edge" ip route add 192.0.2.64/26 via 192.0.2.1

step "nsd for $edge"
"$bin/nsd" --source consul --consul-addr "127.0.0.1:$http_port" --host-id "$edge" \
  --host-netns "$edge" --uplink uplink --ns-prefix "$nsprefix" --resync-interval 1s \
  --metrics-addr 127.0.0.1:19469 >"$work/nsd.log" 2>&1 &
echo $! >"$work/nsd.pid"

step "tenant $tenant: 203.0.113.0/24 (nsctl tenant apply)"
cat >"$work/$tenant.json" <<JSON
{"id": "$tenant", "network": {"prefixes": ["203.0.113.0/24"], "tunnels": [], "routes": []}}
JSON
ctl tenant apply -f "$work/$tenant.json"
for _ in $(seq 100); do ctl status --host "$edge" | grep -q "$tenant.*applied" && break; sleep 0.1; done
ctl status
in_ns "$nsprefix$tenant" ip addr add 203.0.113.1/32 dev lo

step "verdicts"
verdict "tenant namespace $nsprefix$tenant exists" test -e "/run/netns/$nsprefix$tenant"
verdict "ping client -> 203.0.113.1 (into the tenant namespace)" in_ns "$client" ping -c2 -W2 203.0.113.1
verdict "ping tenant -> client 192.0.2.1 (back out through the host)" in_ns "$nsprefix$tenant" ping -c2 -W2 -I 203.0.113.1 192.0.2.1
verdict "steering map holds the prefix" sh -c "nsenter --net=/run/netns/$edge nft list map inet nfhost tenant_marks4 | grep -q 203.0.113.0/24"
verdict "metrics endpoint reports the tenant" sh -c "curl -sf http://127.0.0.1:19469/metrics | grep -q 'nfhost_tenants{state=\"applied\"} 1'"

step "tenant firewall: block ICMP echo (nsctl fw add-rule), then remove the rule"
ctl fw add-rule "$tenant" --id no-ping --expression "icmp.type == 8" --action block
blocked=0
for _ in $(seq 20); do
  if ! in_ns "$client" ping -c1 -W1 203.0.113.1 >/dev/null 2>&1; then blocked=1; break; fi
done
verdict "ping is blocked by the tenant's rule" test "$blocked" = 1
for _ in $(seq 50); do ctl fw stats "$tenant" 2>/dev/null | grep -q "no-ping *[1-9]" && break; sleep 0.2; done
ctl fw stats "$tenant" || true
verdict "the rule's counter counted the pings" sh -c "'$bin/nsctl' --consul-addr 127.0.0.1:$http_port fw stats $tenant | grep -q 'no-ping *[1-9]'"
ctl fw delete-rule "$tenant" no-ping
ok=0
for _ in $(seq 20); do
  if in_ns "$client" ping -c1 -W1 203.0.113.1 >/dev/null 2>&1; then ok=1; break; fi
done
verdict "ping flows again after the rule is removed" test "$ok" = 1

step "DoS: the attacker floods 203.0.113.1:123 with NTP monlist requests; a signature drops them in XDP"
metric() { curl -sf http://127.0.0.1:19469/metrics | awk -v s="$1" '$1 == s {printf "%d", $2; f=1} END {if (!f) print 0}'; }
flood() {  # flood SECONDS: UDP to 203.0.113.1:123 from the attacker, as fast as one socket goes
  in_ns "$attacker" timeout "$1" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
p = bytes([0x17, 0, 3, 0x2a]) + bytes(44)
while True:
    try: s.sendto(p, ("203.0.113.1", 123))
    except OSError: pass' || true
}
nsenter --net="/run/netns/$nsprefix$tenant" -- python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("203.0.113.1", 123)); n = 0
while True:
    s.recvfrom(2048); n += 1
    open("'"$work"'/ntp-received", "w").write(str(n))' </dev/null >/dev/null 2>&1 &
echo $! >"$work/ntp.pid"
sleep 0.3
ctl dos add-signature "$tenant" --id ntp-monlist --expression "udp.dstport == 123 and payload[0:4] & 0x070000ff == 0x0700002a"
sig='nfhost_dos_rule_dropped_packets_total{kind="signature",rule="demo/ntp-monlist"}'
for _ in $(seq 50); do grep -q 'DoS maps updated.*signatures=1' "$work/nsd.log" && break; sleep 0.1; done
d0=$(metric "$sig"); t0=$(date +%s.%N)
flood 3 & fpid=$!
sleep 0.5
verdict "the client pings 203.0.113.1 during the flood" in_ns "$client" ping -c3 -i 0.2 -W1 203.0.113.1
wait $fpid
d1=$(metric "$sig"); t1=$(date +%s.%N)
kill "$(cat "$work/ntp.pid")" 2>/dev/null || true
received=$(cat "$work/ntp-received" 2>/dev/null || echo 0)
dropped=$((d1 - d0))
awk -v d="$dropped" -v a="$t0" -v b="$t1" -v r="$received" \
  'BEGIN {printf "XDP dropped %d flood packets in %.1f s (%.0f pps); the tenant received %d of them\n", d, b-a, d/(b-a), r}'
verdict "the signature dropped the flood in XDP (>1000 packets)" test "$dropped" -gt 1000
verdict "no flood packet reached the tenant" test "$received" = 0
for _ in $(seq 50); do ctl dos stats "$tenant" 2>/dev/null | grep -q "signature:ntp-monlist" && break; sleep 0.2; done
ctl dos stats "$tenant" || true
ctl dos delete-signature "$tenant" ntp-monlist

step "delete tenant $tenant"
ctl tenant delete "$tenant"
for _ in $(seq 100); do [[ -e /run/netns/$nsprefix$tenant ]] || break; sleep 0.1; done
verdict "tenant namespace removed" test ! -e "/run/netns/$nsprefix$tenant"
verdict "no nfhost links left on $edge" sh -c "! nsenter --net=/run/netns/$edge ip -o link | grep -q nfv"

if ((failed)); then
  echo; echo "lab: FAILED; nsd log:"; tail -30 "$work/nsd.log"; exit 1
fi
echo; echo "lab: all verdicts PASS"
