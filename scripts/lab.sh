#!/usr/bin/env bash
# The nfhost namespace lab (make lab). Each host of scripts/lab/topology
# (the same description the Vagrantfile boots as VMs) is a network
# namespace lab-HOST, each link a veth pair, and each host is configured by
# scripts/lab/provision.sh run inside it with nsenter --net, the script
# Vagrant runs in the VMs: so `make lab` tests the VMs' provisioning too.
#
#   lab-router: the internet's router, BIRD 2 AS 65000, BGP with both edges,
#     their equal paths merged into ECMP routes; flowtab4 for FlowSpec
#   lab-edge1, lab-edge2: nsd (XDP + GRE, BGP AS 65001) on uplink 192.0.2.2 / .6
#   lab-client 192.0.2.100, lab-attacker 192.0.2.66: behind the router
#   lab-customer 198.51.100.130: the tenant's GRE box (nfcustomer: the same
#     eBPF datapath as nsd, since this kernel has no GRE; the VMs use the
#     kernel's own GRE), lab-server 203.0.113.1 behind it
#
# Starts a Consul dev agent on 127.0.0.1:18500 and nsd for two edge
# servers, writes a tenant with a GRE tunnel with nsctl, sends traffic from
# the client into the tenant's network through both edges (anycast: any
# edge encapsulates, any edge decapsulates; the router learns the routes
# from the edges over BGP), drains one edge, restarts nsd with kill -9
# (graceful restart), takes an uplink down, exports a DoS signature as
# FlowSpec, switches the tenant's advertise off and on, has the
# tenant block and unblock ICMP with a firewall rule, floods the tenant
# from the attacker and stops the flood in XDP with a DoS signature while
# the client keeps working, shows a flood in `nsctl dos top` and stops it
# with the candidate signature top prints, has automatic mitigation stop
# another, evaluates dashboard queries (deploy/grafana) through a Prometheus
# (deploy/prometheus, on 127.0.0.1:19090) scraping both edges, prints
# verdicts, and removes everything.
# KEEP=1 leaves the lab running (clean up with scripts/lab.sh --down).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/bin
work=${LAB_WORK:-/tmp/nfhost-lab}
http_port=${LAB_CONSUL_PORT:-18500}
. "$root/scripts/lab/lib.sh"
router=lab-router client=lab-client attacker=lab-attacker cust=lab-customer custr=lab-server tenant=demo
edges=(lab-edge1 lab-edge2)
mapfile -t hosts < <(topo_hosts)
consul=$("$root/scripts/install-consul.sh")

in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$ns" -- "$@"; }
ctl() { "$bin/nsctl" --consul-addr "127.0.0.1:$http_port" "$@"; }

down() {
  for f in "$work"/*.pid; do
    [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 0.3
  "$bin/nfcustomer" --netns "$cust" --down 2>/dev/null || true
  rmdir /sys/fs/bpf/nfhost-customer 2>/dev/null || true
  for ns in "${hosts[@]/#/lab-}" nf1-$tenant nf2-$tenant; do
    ip netns del "$ns" 2>/dev/null || true
  done
  [[ -S $work/bird.ctl ]] && command birdc -s "$work/bird.ctl" down >/dev/null 2>&1 || true
  rm -f "$work/bird.ctl"
  # nsd leaves its XDP and GRE programs pinned on purpose; the lab removes them.
  for e in "${edges[@]}"; do rm -rf "/sys/fs/bpf/nfhost/$e"; done
  rm -f "$work"/gr-*
  rm -f "$work"/*.pid "$work/ntp-received"
  rm -rf "$work/prometheus"
}

if [[ ${1:-} == --down ]]; then down; exit 0; fi
[[ $(id -u) -eq 0 ]] || { echo "lab: run as root (it creates network namespaces)" >&2; exit 1; }
[[ -x $bin/nsd && -x $bin/nsctl && -x $bin/nfcustomer ]] || { echo "lab: run 'make build' first" >&2; exit 1; }
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

step "namespaces from scripts/lab/topology: ${hosts[*]}"
for h in "${hosts[@]}"; do
  ip netns add "lab-$h"; in_ns "lab-$h" ip link set lo up
done
while read -r _ ha ia _ hb ib _; do
  ip link add "$ia" netns "lab-$ha" type veth peer name "$ib" netns "lab-$hb"
done < <(topo link)

step "provisioning every host with scripts/lab/provision.sh (nsenter --net; the customer's GRE is nfcustomer: this kernel has no GRE)"
for h in "${hosts[@]}"; do
  LAB_RUN=$work LAB_BIN=$bin LAB_NS_PREFIX=lab- LAB_GRE=nfcustomer LAB_BIRD_CTL=$work/bird.ctl \
    nsenter --net="/run/netns/lab-$h" -- "$root/scripts/lab/provision.sh" "$h"
done

birdc() { command birdc -s "$work/bird.ctl" "$@"; }
for _ in $(seq 50); do birdc show status >/dev/null 2>&1 && break; sleep 0.1; done

step "nsd for ${edges[*]} (BGP AS 65001, passive: the router connects to them)"
start_nsd() { # start_nsd I
  local e=lab-edge$1
  "$bin/nsd" --source consul --consul-addr "127.0.0.1:$http_port" --host-id "$e" \
    --host-netns "$e" --uplink uplink --ns-prefix "nf$1-" --resync-interval 1s \
    --bgp-config "$work/bgp-edge$1.json" \
    --metrics-addr "127.0.0.1:$((19468 + $1))" >>"$work/nsd-$e.log" 2>&1 &
  echo $! >"$work/nsd-$e.pid"
}
for i in 1 2; do # provision.sh wrote their BGP configs from the topology
  : >"$work/nsd-lab-edge$i.log"
  start_nsd $i
done

prom_port=${LAB_PROMETHEUS_PORT:-19090}
step "Prometheus on 127.0.0.1:$prom_port scraping both edges (deploy/prometheus: scrape config and alert rules)"
if command -v prometheus >/dev/null; then
  mkdir -p "$work/prometheus/targets"
  # The shipped configuration, scraping every second instead of 15.
  sed -e 's/scrape_interval: 15s/scrape_interval: 1s/' -e 's/evaluation_interval: 15s/evaluation_interval: 1s/' \
    -e 's/scrape_timeout: 10s/scrape_timeout: 1s/' "$root/deploy/prometheus/prometheus.yml" >"$work/prometheus/prometheus.yml"
  cp "$root/deploy/prometheus/alerts.yml" "$work/prometheus/"
  echo '[{"targets": ["127.0.0.1:19469", "127.0.0.1:19470"], "labels": {"site": "lab"}}]' >"$work/prometheus/targets/lab.json"
  prometheus --config.file "$work/prometheus/prometheus.yml" --storage.tsdb.path "$work/prometheus/data" \
    --web.listen-address "127.0.0.1:$prom_port" --log.level warn >"$work/prometheus.log" 2>&1 &
  echo $! >"$work/prometheus.pid"
else
  echo "lab: prometheus not installed (scripts/deps.sh installs it); the dashboard step is skipped" >&2
fi

step "tenant $tenant: 203.0.113.0/24, a GRE tunnel to its router (nsctl tenant apply)"
cat >"$work/$tenant.json" <<JSON
{"id": "$tenant", "network": {"prefixes": ["203.0.113.0/24"],
  "tunnels": [{"name": "gre-demo", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130",
               "interface_address": "169.254.20.0/31", "health_check": {"type": "reply", "rate": "high"}}],
  "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.20.1"}]}}
JSON
ctl tenant apply -f "$work/$tenant.json"
for _ in $(seq 100); do [[ $(ctl status 2>/dev/null | grep -c "$tenant.*applied") == 2 ]] && break; sleep 0.1; done
ctl status
# A UDP responder on the customer's side, and a client that sends from many source ports
# (the internet hashes flows over both edges).
nsenter --net="/run/netns/$custr" -- python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("203.0.113.1", 53))
while True:
    d, a = s.recvfrom(2048); s.sendto(b"ok", a)' </dev/null >/dev/null 2>&1 &
echo $! >"$work/udp.pid"
flows() { # flows N: UDP requests from N source ports; prints how many were answered
  in_ns "$client" python3 -c '
import socket, sys
ok = 0
for i in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1); s.bind(("192.0.2.100", 0))
    try:
        s.sendto(b"hi", ("203.0.113.1", 53)); ok += s.recvfrom(16)[0] == b"ok"
    except OSError:
        pass
print(ok)' "$1"
}
both_tx() { # both edges encapsulated packets into the tunnel (TX column of nsctl tunnels; the table ends at a blank line)
  [[ $(ctl tunnels "$tenant" 2>/dev/null | awk 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == "TX") c = i; next} NF == 0 {exit} $c > 0' | wc -l) == 2 ]]
}
both_healthy() { [[ $(ctl tunnels "$tenant" 2>/dev/null | grep -c healthy) == 2 ]]; }

hops() { # hops PREFIX: the router's kernel next hops, comma-separated
  in_ns "$router" ip -o route show "$1" | grep -o 'via [0-9.]*' | awk '{print $2}' | paste -sd, -
}
ecmp() { [[ $(hops 203.0.113.0/24) == 192.0.2.2,192.0.2.6 && $(hops 192.0.2.10) == 192.0.2.2,192.0.2.6 ]]; }
only_edge2() { [[ $(hops 203.0.113.0/24) == 192.0.2.6 && $(hops 192.0.2.10) == 192.0.2.6 ]]; }
wait_for() { # wait_for SECONDS CMD...: poll every 50 ms; prints the seconds it took
  local t0 end; t0=$(date +%s.%N); end=$(awk -v a="$t0" -v d="$1" 'BEGIN {printf "%.3f", a + d}'); shift
  while ! "$@"; do
    (($(awk -v e="$end" -v n="$(date +%s.%N)" 'BEGIN {print (n > e)}'))) && return 1
    sleep 0.05
  done
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f\n", b - a}'
}
for _ in $(seq 200); do ecmp && break; sleep 0.1; done
step "verdicts: BGP and anycast"
echo "router: 203.0.113.0/24 via $(hops 203.0.113.0/24), 192.0.2.10 via $(hops 192.0.2.10)"
birdc show protocols | sed 's/^/  /'
verdict "the router learned 203.0.113.0/24 and the anycast endpoint from both edges over BGP (ECMP)" ecmp
step "verdicts: tunnels and anycast"
for _ in $(seq 50); do both_healthy && break; sleep 0.2; done
verdict "tenant namespaces on both edges" test -e /run/netns/nf1-$tenant -a -e /run/netns/nf2-$tenant
verdict "ping client -> 203.0.113.1 behind the customer's router (edge, tenant namespace, GRE)" \
  in_ns "$client" ping -c2 -W2 -I 192.0.2.100 203.0.113.1
verdict "ping customer router -> client (GRE to the anycast endpoint, back out of an edge)" \
  in_ns "$custr" ping -c2 -W2 -I 203.0.113.1 192.0.2.100
answered=$(flows 32)
echo "32 UDP flows from the client: $answered answered"
verdict "every flow answered" test "$answered" = 32
sleep 1.2 # status carries the tunnel counters after the next resync
ctl tunnels "$tenant"
verdict "both edges encapsulated traffic into the tunnel (anycast)" both_tx
verdict "tunnel health checks healthy on both edges" both_healthy
# TCP transfers from the client to the customer's router: N connections
# from different source ports (so both edges carry some), each must
# deliver every byte it sent.
nsenter --net="/run/netns/$custr" -- python3 -c '
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("203.0.113.1", 5001)); s.listen(64)
def h(c):
    n = 0
    while True:
        d = c.recv(65536)
        if not d: break
        n += len(d)
    c.sendall(str(n).encode()); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=h, args=(c,), daemon=True).start()' </dev/null >/dev/null 2>&1 &
echo $! >"$work/tcp.pid"
for _ in $(seq 100); do in_ns "$custr" ss -Hltn 'sport = :5001' | grep -q 5001 && break; sleep 0.1; done
tcp_transfer() { # tcp_transfer N SECONDS: prints "K of N connections delivered every byte"; fails unless all did
  in_ns "$client" python3 -c '
import socket, sys, threading, time
n, secs, res = int(sys.argv[1]), float(sys.argv[2]), []
def run():
    try:
        c = socket.create_connection(("203.0.113.1", 5001), timeout=5, source_address=("192.0.2.100", 0))
        sent, end = 0, time.time() + secs
        while time.time() < end:
            c.sendall(b"x" * 4096); sent += 4096; time.sleep(0.005)
        c.shutdown(socket.SHUT_WR); res.append(int(c.recv(64) or b"-1") == sent)
    except OSError:
        res.append(False)
ts = [threading.Thread(target=run) for _ in range(n)]
[t.start() for t in ts]; [t.join() for t in ts]
print("%d of %d connections delivered every byte" % (sum(res), n)); sys.exit(0 if all(res) else 1)' "$@"
}

step "drain: nsctl drain lab-edge1 during TCP transfers, then undrain"
tcp_transfer 8 5 >"$work/tcp-drain" & tpid=$!
sleep 1
ctl drain lab-edge1
took=$(wait_for 20 only_edge2) || took=
echo "the router dropped lab-edge1's path ${took:+after ${took}s}: 203.0.113.0/24 via $(hops 203.0.113.0/24)"
verdict "nsctl drain lab-edge1: the router dropped lab-edge1's paths" test -n "$took"
answered=$(flows 16)
verdict "lab-edge1 drained: all 16 flows go on through lab-edge2" test "$answered" = 16
wait $tpid && tcp_ok=1 || tcp_ok=0
echo "TCP during the drain: $(cat "$work/tcp-drain")"
verdict "TCP transfers running through the drain lost nothing" test "$tcp_ok" = 1
for _ in $(seq 50); do ctl bgp --host lab-edge1 2>/dev/null | grep -q DRAINED && break; sleep 0.1; done
ctl bgp --host lab-edge1 || true
verdict "nsctl bgp shows lab-edge1 drained, announcing nothing" sh -c "'$bin/nsctl' --consul-addr 127.0.0.1:$http_port bgp --host lab-edge1 | grep -q 'DRAINED' && '$bin/nsctl' --consul-addr 127.0.0.1:$http_port bgp --host lab-edge1 | grep -q 'announced (0)'"
ctl undrain lab-edge1
took=$(wait_for 20 ecmp) || took=
verdict "nsctl undrain lab-edge1: both paths back ${took:+after ${took}s}" test -n "$took"

step "graceful restart: kill -9 nsd on lab-edge1 during TCP transfers, start it again"
( lost=0; while [[ ! -e $work/gr-stop ]]; do ecmp || lost=1; sleep 0.02; done; echo $lost >"$work/gr-lost" ) &
wpid=$!
tcp_transfer 8 8 >"$work/tcp-gr" & tpid=$!
sleep 1
kill -9 "$(cat "$work/nsd-lab-edge1.pid")"
for _ in $(seq 100); do birdc show protocols edge1 | grep -q Established || break; sleep 0.1; done
birdc show route 203.0.113.0/24 all | grep -E 'edge1|stale' | sed 's/^/  /' || true
start_nsd 1
for _ in $(seq 300); do birdc show protocols edge1 | grep -q Established && break; sleep 0.1; done
wait $tpid && tcp_ok=1 || tcp_ok=0
sleep 1; touch "$work/gr-stop"; wait $wpid; rm -f "$work/gr-stop"
echo "TCP during the restart: $(cat "$work/tcp-gr")"
verdict "the router kept lab-edge1's path through the restart (graceful restart, End-of-RIB)" test "$(cat "$work/gr-lost")" = 0
verdict "TCP transfers running through the restart lost nothing" test "$tcp_ok" = 1

step "lab-edge1's uplink fails silently (it stays up, nothing passes): the router drops the path after the hold time (9 s)"
# An nft table in lab-edge1 drops everything the edge's own stack sends or
# receives, BGP included (the link keeps its carrier, so BIRD sees no
# interface event; with the link down it would drop the session at once).
in_ns lab-edge1 nft -f - <<'NFT'
table inet lab_uplink_dead {
  chain in { type filter hook input priority -500; policy drop; }
  chain out { type filter hook output priority -500; policy drop; }
}
NFT
took=$(wait_for 20 only_edge2) || took=
echo "the router dropped lab-edge1's path ${took:+${took} s after its uplink died} (hold time 9 s)"
verdict "silent uplink failure: the router dropped lab-edge1's path after the hold time" test -n "$took"
answered=$(flows 16)
verdict "lab-edge1's uplink dead: all 16 flows go through lab-edge2" test "$answered" = 16
in_ns lab-edge1 nft delete table inet lab_uplink_dead
took=$(wait_for 60 ecmp) || took=
verdict "uplink back: both paths back ${took:+after ${took} s}" test -n "$took"

step "FlowSpec: a signature marked for export reaches the router's flowtab4"
ctl dos add-signature "$tenant" --id big-ntp --expression "udp.dstport == 123 and ip.len >= 400" --export flowspec
flow_both() { [[ $(birdc show route table flowtab4 | grep -c '192.0.2.[26]\]\|from 192.0.2.[26]') -ge 2 ]]; }
took=$(wait_for 20 flow_both) || took=
birdc show route table flowtab4 all | sed 's/^/  /'
verdict "the rule is in flowtab4 from both edges ${took:+after ${took}s}" test -n "$took"
ctl bgp | grep -E 'flowspec|not exported' || true
ctl dos delete-signature "$tenant" big-ntp
flow_gone() { ! birdc show route table flowtab4 | grep -q '203.0.113.0/24'; }
took=$(wait_for 20 flow_gone) || took=
verdict "removing the signature withdraws the rule" test -n "$took"

step "advertise false: the tenant's prefix is withdrawn from both edges (the tunnel endpoint stays)"
sed 's/"prefixes": \["203.0.113.0\/24"\],/"prefixes": ["203.0.113.0\/24"], "advertise": false,/' "$work/$tenant.json" >"$work/$tenant-off.json"
ctl tenant apply -f "$work/$tenant-off.json"
withdrawn() { [[ -z $(hops 203.0.113.0/24) && $(hops 192.0.2.10) == 192.0.2.2,192.0.2.6 ]]; }
took=$(wait_for 20 withdrawn) || took=
verdict "advertise false: 203.0.113.0/24 gone from the router ${took:+after ${took}s}" test -n "$took"
ctl tenant apply -f "$work/$tenant.json"
took=$(wait_for 20 ecmp) || took=
verdict "advertise true: announced again by both edges" test -n "$took"

step "tenant firewall: block ICMP echo (nsctl fw add-rule), then remove the rule"
ctl fw add-rule "$tenant" --id no-ping --expression "icmp.type == 8" --action block
blocked=0
for _ in $(seq 20); do
  if ! in_ns "$client" ping -c1 -W1 -I 192.0.2.100 203.0.113.1 >/dev/null 2>&1; then blocked=1; break; fi
done
verdict "ping is blocked by the tenant's rule" test "$blocked" = 1
for _ in $(seq 50); do ctl fw stats "$tenant" 2>/dev/null | grep -q "no-ping *[1-9]" && break; sleep 0.2; done
ctl fw stats "$tenant" || true
counted() { ctl fw stats "$tenant" | grep -q 'no-ping *[1-9]'; }
verdict "the rule's counter counted the pings" counted
ctl fw delete-rule "$tenant" no-ping
ok=0
for _ in $(seq 20); do
  if in_ns "$client" ping -c1 -W1 -I 192.0.2.100 203.0.113.1 >/dev/null 2>&1; then ok=1; break; fi
done
verdict "ping flows again after the rule is removed" test "$ok" = 1

step "DoS: the attacker floods 203.0.113.1:123 with NTP monlist requests; a signature drops them in XDP"
metric() { # the sum over both edges
  for p in 19469 19470; do curl -sf "http://127.0.0.1:$p/metrics"; done | awk -v s="$1" '$1 == s {n += $2} END {printf "%d", n}'
}
flood() {  # flood SECONDS: UDP to 203.0.113.1:123 from the attacker, as fast as one socket goes
  in_ns "$attacker" timeout "$1" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
p = bytes([0x17, 0, 3, 0x2a]) + bytes(44)
while True:
    try: s.sendto(p, ("203.0.113.1", 123))
    except OSError: pass' || true
}
nsenter --net="/run/netns/$custr" -- python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("203.0.113.1", 123)); n = 0
while True:
    s.recvfrom(2048); n += 1
    open("'"$work"'/ntp-received", "w").write(str(n))' </dev/null >/dev/null 2>&1 &
echo $! >"$work/ntp.pid"
sleep 0.3
ctl dos add-signature "$tenant" --id ntp-monlist --expression "udp.dstport == 123 and payload[0:4] & 0x070000ff == 0x0700002a"
sig='nfhost_dos_rule_dropped_packets_total{kind="signature",rule="demo/ntp-monlist"}'
for e in "${edges[@]}"; do
  for _ in $(seq 50); do grep -q 'DoS maps updated.*signatures=1' "$work/nsd-$e.log" && break; sleep 0.1; done
done
d0=$(metric "$sig"); t0=$(date +%s.%N)
flood 3 & fpid=$!
sleep 0.5
verdict "the client pings 203.0.113.1 during the flood" in_ns "$client" ping -c3 -i 0.2 -W1 -I 192.0.2.100 203.0.113.1
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

step "nsctl dos top: an 18k pps flood seen on both edges; its candidate signature, added as printed, drops it"
echo '{"sample_rate": 64}' >"$work/dos.json"
ctl dos put "$tenant" -f "$work/dos.json"
sleep 1
flood18k() { # flood18k SECONDS: 18k pps of NTP monlist to 203.0.113.1:123 from 64 source ports
  in_ns "$attacker" python3 -c '
import socket, sys, time, random
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
p = bytes([0x17, 0, 3, 0x2a]) + bytes(44); start = time.monotonic(); sent = 0
while time.monotonic() - start < float(sys.argv[1]):
    due = int((time.monotonic() - start) * 18000)
    while sent < due:
        random.choice(socks).sendto(p, ("203.0.113.1", 123)); sent += 1
    time.sleep(0.001)' "$1"
}
flood18k 14 & fpid=$!
edges_top=(--edge 127.0.0.1:19469 --edge 127.0.0.1:19470)
ctl dos top "$tenant" "${edges_top[@]}" --once --window 1s >/dev/null # starts the watch on both edges
sleep 2
ctl dos top "$tenant" "${edges_top[@]}" --once --top 3 | tee "$work/top.txt"
ctl dos top "$tenant" "${edges_top[@]}" --once -o json >"$work/top.json"
top_id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["candidates"][0]["id"])' "$work/top.json" 2>/dev/null || true)
verdict "dos top names the victim, the attack's /24 and udp/123" \
  sh -c "grep -q '203.0.113.1 $tenant' $work/top.txt && grep -q '192.0.2.0/24' $work/top.txt && grep -q 'udp/123' $work/top.txt"
# The same through Consul, for edges nsctl cannot reach: every nsd publishes its frame.
ctl dos top "$tenant" --via-store --once --top 1 >"$work/top-store.txt" || true
head -5 "$work/top-store.txt"
verdict "dos top --via-store: both edges answer through Consul" grep -q "lab-edge1,lab-edge2" "$work/top-store.txt"
if [[ -n $top_id ]]; then
  python3 -c 'import json,sys; print("\0".join(json.load(open(sys.argv[1]))["candidates"][0]["argv"]), end="")' "$work/top.json" |
    xargs -0 "$bin/nsctl" --consul-addr "127.0.0.1:$http_port"
  tsig="nfhost_dos_rule_dropped_packets_total{kind=\"signature\",rule=\"$tenant/$top_id\"}"
  for _ in $(seq 50); do (($(metric "$tsig") > 0)) && break; sleep 0.1; done
  sleep 1
fi
verdict "the candidate signature from dos top drops the flood in XDP" test "$(metric "${tsig:-none}")" -gt 1000
verdict "the client pings 203.0.113.1 while the flood is dropped" in_ns "$client" ping -c3 -i 0.2 -W1 -I 192.0.2.100 203.0.113.1
wait $fpid || true
[[ -n $top_id ]] && ctl dos delete-signature "$tenant" "$top_id"

step "automatic mitigation: an 18k pps flood with no rule in place (auto_mitigation from the XDP samples)"
echo '{"sample_rate": 64, "auto_mitigation": {"pps": 5000, "duration": "30s"}}' >"$work/dos.json"
ctl dos put "$tenant" -f "$work/dos.json"
sleep 1.5
autodrops() {
  for p in 19469 19470; do curl -sf "http://127.0.0.1:$p/metrics"; done |
    awk '/^nfhost_dos_rule_dropped_packets_total\{kind="signature",rule="demo\/auto-/ {n += $2} END {printf "%d", n}'
}
a0=$(autodrops)
in_ns "$attacker" python3 -c '
import socket, time, random
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(64)]
p = bytes([0x17, 0, 3, 0x2a]) + bytes(44); start = time.monotonic(); sent = 0
while time.monotonic() - start < 3:
    due = int((time.monotonic() - start) * 18000)
    while sent < due:
        random.choice(socks).sendto(p, ("203.0.113.1", 123)); sent += 1
    time.sleep(0.001)' &
fpid=$!
t0=$(date +%s%N); ta=0
while kill -0 $fpid 2>/dev/null; do
  if ((ta == 0)) && (($(autodrops) > a0)); then ta=$(date +%s%N); fi
  sleep 0.01
done
wait $fpid || true
if ((ta > 0)); then echo "XDP dropped the flood by a derived signature $(((ta - t0) / 1000000)) ms after it started"; fi
grep -h "automatic DoS mitigation" "$work"/nsd-*.log | sed 's/.*victim=/  victim=/' | head -2
verdict "the flood was dropped by an automatic signature" test "$ta" -gt 0
verdict "the client still reaches 203.0.113.1" in_ns "$client" ping -c2 -W1 -I 192.0.2.100 203.0.113.1
echo '{}' >"$work/dos.json"
ctl dos put "$tenant" -f "$work/dos.json"

if [[ -f $work/prometheus.pid ]]; then
  step "Prometheus: dashboard queries (deploy/grafana/nfhost.json) through its HTTP API"
  promq() { # promq TITLE QUERY: prints the result, one series a line
    echo "$1:  $2"
    curl -sf --get "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$2" | python3 -c '
import json, sys
for r in json.load(sys.stdin)["data"]["result"]:
    labels = ",".join("%s=%s" % kv for kv in sorted(r["metric"].items()))
    print("    {%s} %.4g" % (labels, float(r["value"][1])))'
  }
  promq "applied tenants per host" 'sum by (instance) (nfhost_tenants{state="applied"})'
  promq "tunnel state (0 healthy, 1 degraded, 2 down)" 'max by (instance, tenant, tunnel) (nfhost_tunnel_health_state)'
  promq "XDP drop rate per reason (pps, last minute)" 'sum by (reason) (rate(nfhost_dos_packets_total{reason=~"deny|tenant_deny|signature_drop|rate_drop|malformed"}[1m]))'
  promq "alerts firing" 'ALERTS{alertstate="firing"}'
  verdict "Prometheus scrapes both edges" \
    sh -c "curl -sf 'http://127.0.0.1:$prom_port/api/v1/query?query=count(up%7Bjob%3D%22nfhost%22%7D%3D%3D1)' | grep -q '\"2\"'"
fi

step "delete tenant $tenant"
ctl tenant delete "$tenant"
for _ in $(seq 100); do [[ -e /run/netns/nf1-$tenant || -e /run/netns/nf2-$tenant ]] || break; sleep 0.1; done
verdict "tenant namespaces removed on both edges" test ! -e /run/netns/nf1-$tenant -a ! -e /run/netns/nf2-$tenant
for e in "${edges[@]}"; do
  verdict "no nfhost links left on $e" sh -c "! nsenter --net=/run/netns/$e ip -o link | grep -q 'nfv\|nft'"
done

if ((failed)); then
  echo; echo "lab: FAILED; nsd logs:"; tail -n 20 "$work"/nsd-*.log; exit 1
fi
echo; echo "lab: all verdicts PASS"
