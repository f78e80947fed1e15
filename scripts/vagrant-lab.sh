#!/usr/bin/env bash
# make test-vagrant: the nfhost lab on VMs (the Vagrantfile, from
# scripts/lab/topology), with verdict lines like make lab's.
#
#   scripts/vagrant-lab.sh            box, libvirt, vagrant up, verdicts, vagrant destroy
#   KEEP=1 scripts/vagrant-lab.sh     leave the VMs (and the daemons it started) running
#   scripts/vagrant-lab.sh --verdicts only the verdicts, on VMs already up
#   scripts/vagrant-lab.sh --down     vagrant destroy, stop the daemons it started
#
# Builds (once; cached) the box with scripts/vagrant-box.sh, starts virtlogd
# and libvirtd if they are not running (no systemd: it stops what it started,
# by PID, at the end), defines the libvirt storage pool nfV, boots the VMs
# one after the other (2 cores of emulated CPUs cope with that), and runs
# the scenarios from the machine running Vagrant: nsctl talks to the
# router's Consul over the control network (198.18.0.0/24), commands run in
# the VMs over one multiplexed ssh connection each.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/lab/lib.sh
work=${VAGRANT_LAB_WORK:-/tmp/nfV-vagrant}
mkdir -p "$work"
export VAGRANT_DEFAULT_PROVIDER=libvirt
export LIBVIRT_DEFAULT_URI=qemu:///system
tenant=demo
bin=$root/bin
router_ctl=$(topo_ctl router)
mapfile -t vms < <(awk '$1 == "host" && !seen[$4]++ {print $4}' "$topology")
step() { printf '\n== %s\n' "$*"; }
failed=0
verdict() { if "${@:2}" >/dev/null 2>&1; then echo "PASS  $1"; else echo "FAIL  $1"; failed=1; fi; }
ctl() { "$bin/nsctl" --consul-addr "$router_ctl:8500" "$@"; }
elapsed() { echo $(($(date +%s) - $1)); }

daemons() { # start virtlogd and libvirtd unless running; remember the ones we started
  local d
  for d in virtlogd libvirtd; do
    if ! pgrep -x "$d" >/dev/null; then
      "$d" -d
      for _ in $(seq 50); do [[ -s /run/$d.pid ]] && break; sleep 0.1; done
      cp "/run/$d.pid" "$work/$d.started"
      echo "vagrant-lab: started $d (pid $(cat "$work/$d.started"))" >&2
    fi
  done
  for _ in $(seq 100); do virsh list >/dev/null 2>&1 && break; sleep 0.1; done
  if ! virsh pool-info nfV >/dev/null 2>&1; then
    mkdir -p /var/lib/libvirt/nfV-pool
    virsh -q pool-define-as nfV dir --target /var/lib/libvirt/nfV-pool
  fi
  [[ $(virsh pool-info nfV) == *running* ]] || virsh -q pool-start nfV
}
stop_daemons() { # stop, by PID, the daemons this script started
  local d
  for d in libvirtd virtlogd; do
    [[ -s $work/$d.started ]] || continue
    kill "$(cat "$work/$d.started")" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$(cat "$work/$d.started")" 2>/dev/null || break; sleep 0.1; done
    rm -f "$work/$d.started"
    echo "vagrant-lab: stopped $d" >&2
  done
}
down() {
  ssh_close
  if [[ $(virsh list --all --name 2>/dev/null) == *nfV-* ]]; then vagrant destroy -f >"$work/destroy.log" 2>&1 || cat "$work/destroy.log" >&2; fi
  # vagrant destroy removes the networks it made; these are ours in any case.
  for n in nfV-ctl nfV-vagrant; do
    virsh net-info "$n" >/dev/null 2>&1 || continue
    virsh -q net-destroy "$n" 2>/dev/null || true
    virsh -q net-undefine "$n" 2>/dev/null || true
  done
  stop_daemons
}

# Commands in the VMs: one ssh connection each (ControlMaster), as root.
ssh_setup() {
  : >"$work/ssh-config"
  for vm in "${vms[@]}"; do vagrant ssh-config "$vm" >>"$work/ssh-config"; done
  cat >>"$work/ssh-config" <<EOF
Host *
  ControlMaster auto
  ControlPath $work/ssh-%h
  ControlPersist 30m
  Ciphers aes128-gcm@openssh.com
  ServerAliveInterval 10
EOF
}
ssh_close() { for vm in "${vms[@]}"; do ssh -F "$work/ssh-config" -O exit "$vm" >/dev/null 2>&1 || true; done; }
on() { # on VM CMD...: runs CMD in the VM as root (arguments quoted for the remote shell)
  local vm=$1; shift
  ssh -F "$work/ssh-config" "$vm" sudo "$(printf '%q ' "$@")"
}
at() { # at HOST CMD...: in the host's namespace (a host that is not its VM is a namespace in it)
  local h=$1 vm; shift
  vm=$(topo_host "$h" vm)
  if [[ $h == "$vm" ]]; then on "$vm" "$@"; else on "$vm" nsenter --net="/run/netns/$h" -- "$@"; fi
}

if [[ ${1:-} == --down ]]; then down; exit 0; fi
[[ $(id -u) -eq 0 ]] || { echo "vagrant-lab: run as root (libvirt, debootstrap)" >&2; exit 1; }
[[ -x $bin/nsd && -x $bin/nsctl ]] || { echo "vagrant-lab: run 'make build' first" >&2; exit 1; }
# What only this needs (scripts/deps.sh has the rest): Debian packages.
need=()
for t in vagrant:vagrant virsh:libvirt-clients libvirtd:libvirt-daemon-system virtlogd:libvirt-daemon-system \
  /usr/lib/qemu/virtiofsd:qemu-system-common qemu-system-x86_64:qemu-system-x86 curl:curl; do
  command -v "${t%%:*}" >/dev/null || need+=("${t#*:}")
done
[[ -e /usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so ]] || need+=(libvirt-daemon-driver-qemu)
ls -d /usr/share/rubygems-integration/all/gems/vagrant-libvirt-* >/dev/null 2>&1 || need+=(vagrant-libvirt)
if ((${#need[@]})); then
  echo "vagrant-lab: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) dnsmasq-base >/dev/null
fi

t_all=$(date +%s)
if [[ ${1:-} != --verdicts ]]; then
  step "box (scripts/vagrant-box.sh: built once, cached under ~/.cache/nfhost/box)"
  t=$(date +%s)
  export NFHOST_BOX=${NFHOST_BOX:-$(scripts/vagrant-box.sh)}
  echo "box $NFHOST_BOX ready after $(elapsed "$t") s"
  step "libvirt: virtlogd, libvirtd, storage pool nfV"
  daemons
  [[ ${KEEP:-0} == 1 ]] || trap down EXIT
  step "vagrant up, one VM after the other: ${vms[*]}"
  for vm in "${vms[@]}"; do
    t=$(date +%s)
    if ! vagrant up "$vm" >"$work/up-$vm.log" 2>&1; then
      tail -30 "$work/up-$vm.log"; echo "vagrant-lab: vagrant up $vm failed (console: /tmp/nfV-console-$vm.log)" >&2; exit 1
    fi
    grep -E 'vm-setup|provision|vm-nsd' "$work/up-$vm.log" | sed 's/^ *//' || true
    echo "$vm up and provisioned after $(elapsed "$t") s"
  done
else
  daemons
fi
ssh_setup
for vm in "${vms[@]}"; do on "$vm" true; done # opens the connections

step "tenant $tenant: 203.0.113.0/24, two GRE tunnels to the customer's kernel GRE (gre1 primary, gre2 backup)"
cat >"$work/$tenant.json" <<JSON
{"id": "$tenant", "network": {"prefixes": ["203.0.113.0/24"],
  "tunnels": [{"name": "gre-demo", "anycast_endpoint": "192.0.2.10", "customer_endpoint": "198.51.100.130",
               "interface_address": "169.254.20.0/31", "health_check": {"type": "reply", "rate": "high"}},
              {"name": "gre-backup", "anycast_endpoint": "192.0.2.11", "customer_endpoint": "198.51.100.130",
               "interface_address": "169.254.21.0/31", "health_check": {"type": "reply", "rate": "high"}}],
  "routes": [{"prefix": "203.0.113.0/24", "nexthop": "169.254.20.1", "priority": 100},
             {"prefix": "203.0.113.0/24", "nexthop": "169.254.21.1", "priority": 200}]}}
JSON
for _ in $(seq 100); do ctl tenant list >/dev/null 2>&1 && break; sleep 0.2; done
# VMs that ran the verdicts before (--verdicts): back to the start.
if ctl tenant list 2>/dev/null | grep "$tenant" >/dev/null; then
  ctl fw delete-rule "$tenant" no-dns >/dev/null 2>&1 || true
  ctl dos delete-signature "$tenant" ntp-monlist >/dev/null 2>&1 || true
  echo '{}' >"$work/dos.json"; ctl dos put "$tenant" -f "$work/dos.json" >/dev/null 2>&1 || true
fi
ctl undrain edge1 >/dev/null 2>&1 || true
# The last verdict took edge1's uplink down (its routes went with it) and
# stopped nsd: provisioning (idempotent) puts both back.
on edge1 ip link set uplink up
on edge1 env LAB_RUN=/run/nfhost-lab LAB_NSD=1 /vagrant/scripts/lab/provision.sh edge1
ctl tenant apply -f "$work/$tenant.json"
for _ in $(seq 300); do [[ $(ctl status 2>/dev/null | grep -c "$tenant.*applied") == 2 ]] && break; sleep 0.2; done
ctl status || true
for e in edge1 edge2; do echo "$e GRE backend: $(on "$e" cat /run/nfhost-lab/gre-backend 2>/dev/null || echo '?')"; done

# A UDP responder and a TCP sink on the server, many-source-port clients.
at server sh -c 'kill $(cat /tmp/udp.pid) 2>/dev/null; nohup python3 -c "
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((\"203.0.113.1\", 53))
while True:
    d, a = s.recvfrom(2048); s.sendto(b\"ok\", a)" </dev/null >/dev/null 2>&1 & echo $! >/tmp/udp.pid'
flows() { # flows N [TRIES]: UDP requests from N source ports; prints how many were answered
  # (a flow is one source port: up to 3 requests, 1.5 s each, since an
  # emulated CPU on a loaded machine drops a packet now and then)
  at client python3 -c '
import socket, sys
ok = 0
for i in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.5); s.bind(("192.0.2.100", 0))
    for _ in range(int(sys.argv[2])):
        try:
            s.sendto(b"hi", ("203.0.113.1", 53)); ok += s.recvfrom(16)[0] == b"ok"; break
        except OSError:
            pass
print(ok)' "$1" "${2:-3}"
}
hops() { at router ip -o route show "$1" | grep -o 'via [0-9.]*' | awk '{print $2}' | paste -sd, -; }
ecmp() { [[ $(hops 203.0.113.0/24) == 192.0.2.2,192.0.2.6 && $(hops 192.0.2.10) == 192.0.2.2,192.0.2.6 ]]; }
only_edge2() { [[ $(hops 203.0.113.0/24) == 192.0.2.6 ]]; }
tunnel_col() { # tunnel_col TUNNEL COLUMN: the column for that tunnel, one line per edge
  ctl tunnels "$tenant" 2>/dev/null | awk -v t="$1" -v col="$2" 'NR == 1 {for (i = 1; i <= NF; i++) if ($i == col) c = i; next} NF == 0 {exit} $2 == t {print $c}'
}
both_state() { [[ $(tunnel_col "$1" STATE | grep -cE "^($2)\$") == 2 ]]; }
# Answered: healthy, or degraded (emulated CPUs on a loaded machine lose
# some probes to their 500 ms timeout).
up='healthy|degraded'
both_tx() { [[ $(tunnel_col gre-demo TX | awk '$1 > 0' | wc -l) == 2 ]]; }
wait_for() { # wait_for SECONDS CMD...: prints the seconds it took
  local t0=$SECONDS secs=$1
  shift
  while ! "$@"; do (((SECONDS - t0) >= secs)) && return 1; sleep 0.5; done
  echo $((SECONDS - t0))
}
metric() { # the sum over both edges of one series
  for e in edge1 edge2; do curl -sf "http://$(topo_ctl "$e"):9469/metrics"; done | awk -v s="$1" '$1 == s {n += $2} END {printf "%d", n}'
}

step "verdicts: BGP and anycast"
took=$(wait_for 120 ecmp) || took=
echo "router: 203.0.113.0/24 via $(hops 203.0.113.0/24), 192.0.2.10 via $(hops 192.0.2.10)"
at router birdc -s /run/nfhost-lab/bird.ctl show protocols | sed 's/^/  /' || true
verdict "the router learned 203.0.113.0/24 and the anycast endpoint from both edges over BGP (ECMP)" test -n "$took"

step "verdicts: tunnels, the customer's kernel GRE"
wait_for 120 both_state gre-demo "$up" >/dev/null || true
verdict "ping client -> 203.0.113.1 behind the customer's router (edge, tenant namespace, GRE into the kernel's gre1)" \
  at client ping -c3 -W3 -I 192.0.2.100 203.0.113.1
verdict "ping server -> client (the customer's kernel GRE to the anycast endpoint, decapsulated by an edge)" \
  at server ping -c3 -W3 -I 203.0.113.1 192.0.2.100
answered=$(flows 32)
echo "32 UDP flows from the client: $answered answered"
verdict "every flow answered" test "$answered" = 32
sleep 2
ctl tunnels "$tenant" || true
at customer ip -s link show gre1 | sed 's/^/  /' || true
gre_rx() { at customer cat /sys/class/net/gre1/statistics/rx_packets; }
gre_tx() { at customer cat /sys/class/net/gre1/statistics/tx_packets; }
verdict "the customer's kernel gre1 decapsulated and encapsulated packets (RX and TX > 0)" \
  test "$(gre_rx)" -gt 0 -a "$(gre_tx)" -gt 0
verdict "both edges encapsulated traffic into the tunnel (anycast)" both_tx
verdict "tunnel health checks answered by Linux GRE on both edges (healthy or degraded: $(tunnel_col gre-demo STATE | paste -sd, -))" both_state gre-demo "$up"
# The backend in force, as nsd reports it (nfhost_gre_backend_info), not the flag.
backend_of() { curl -sf "http://$(topo_ctl "$1"):9469/metrics" | awk '$1 ~ /^nfhost_gre_backend_info/ && $2 == 1 {sub(/.*backend="/, "", $1); sub(/".*/, "", $1); print $1}'; }
edge1_backend=$(backend_of edge1 || true)
edge2_backend=$(backend_of edge2 || true)
verdict "a mixed fleet: edge2 (GRE backend: ${edge2_backend:-?}) serves the same tenant as edge1 (GRE backend: ${edge1_backend:-?}): both applied, both carried flows" \
  sh -c "[ '$edge1_backend' = ebpf ] && [ '$edge2_backend' = kernel ] && [ \$('$bin/nsctl' --consul-addr $router_ctl:8500 status | grep -c '$tenant.*applied') = 2 ]"

step "tunnel failover: the customer's gre1 goes down; both edges see gre-demo down and route through gre-backup"
at customer ip link set gre1 down
took=$(wait_for 30 both_state gre-demo down) || took=
ctl tunnels "$tenant" || true
verdict "both edges' health checks put gre-demo down ${took:+after ${took} s}" test -n "$took"
gre2_rx() { at customer cat /sys/class/net/gre2/statistics/rx_packets; }
r0=$(gre2_rx)
answered=$(flows 16)
r1=$(gre2_rx)
verdict "all 16 flows answered through gre-backup" test "$answered" = 16
verdict "the customer's gre2 received them ($((r1 - r0)) packets, health checks included)" test $((r1 - r0)) -ge 16
at customer ip link set gre1 up
# Taking gre1 down removed its routes: provisioning puts them back (idempotent).
at customer env LAB_RUN=/run/nfhost-lab /vagrant/scripts/lab/provision.sh customer >/dev/null 2>&1
took=$(wait_for 60 both_state gre-demo "$up") || took=
verdict "gre1 back: gre-demo answered again on both edges ${took:+after ${took} s} ($(tunnel_col gre-demo STATE | paste -sd, -))" test -n "$took"

step "tenant firewall through Consul: block UDP to port 53 (nsctl fw add-rule), on both edges"
ctl fw add-rule "$tenant" --id no-dns --expression "udp.dstport == 53" --action block
all_blocked() { [[ $(flows 16 1) == 0 ]]; }
all_answered() { [[ $(flows 16) == 16 ]]; }
took=$(wait_for 30 all_blocked) || took=
verdict "all 16 flows (hashed over both edges) blocked by the rule ${took:+after ${took} s}" test -n "$took"
ctl fw stats "$tenant" || true
ctl fw delete-rule "$tenant" no-dns
took=$(wait_for 30 all_answered) || took=
verdict "all 16 flows answered again after the rule is removed" test -n "$took"

step "DoS: the attacker floods 203.0.113.1:123 with NTP monlist requests; a signature drops them in XDP"
at server sh -c "kill \$(cat /tmp/ntp.pid) 2>/dev/null; echo 0 >/tmp/ntp-received; nohup python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((\"203.0.113.1\", 123)); n = 0
while True:
    s.recvfrom(2048); n += 1
    open(\"/tmp/ntp-received\", \"w\").write(str(n))' </dev/null >/dev/null 2>&1 & echo \$! >/tmp/ntp.pid"
flood() { # flood SECONDS PPS: NTP monlist requests from 32 source ports
  at attacker timeout $(($1 + 5)) python3 -c '
import socket, sys, time, random
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(32)]
p = bytes([0x17, 0, 3, 0x2a]) + bytes(44); start = time.monotonic(); sent = 0
secs, pps = float(sys.argv[1]), int(sys.argv[2])
while time.monotonic() - start < secs:
    due = int((time.monotonic() - start) * pps)
    while sent < due:
        random.choice(socks).sendto(p, ("203.0.113.1", 123)); sent += 1
    time.sleep(0.002)
print(sent)' "$1" "$2"
}
sig_lines() { on "$1" grep -c 'DoS maps updated.*signatures=1' /var/log/nsd.log || true; }
n1=$(sig_lines edge1) n2=$(sig_lines edge2)
ctl dos add-signature "$tenant" --id ntp-monlist --expression "udp.dstport == 123 and payload[0:4] & 0x070000ff == 0x0700002a"
sig='nfhost_dos_rule_dropped_packets_total{kind="signature",rule="demo/ntp-monlist"}'
sig_on() { (($(sig_lines "$1") > $2)); }
wait_for 60 sig_on edge1 "$n1" >/dev/null || echo "vagrant-lab: edge1 did not log the signature" >&2
wait_for 60 sig_on edge2 "$n2" >/dev/null || echo "vagrant-lab: edge2 did not log the signature" >&2
d0=$(metric "$sig")
flood 5 2000 >"$work/flood-sent" & fpid=$!
sleep 1
verdict "the client pings 203.0.113.1 during the flood" at client ping -c3 -i 0.5 -W2 -I 192.0.2.100 203.0.113.1
wait $fpid || true
sleep 2
d1=$(metric "$sig")
received=$(at server cat /tmp/ntp-received 2>/dev/null || echo 0)
echo "the attacker sent $(cat "$work/flood-sent") packets; XDP dropped $((d1 - d0)); the tenant received $received"
verdict "the signature dropped the flood in XDP (>1000 packets, both edges' counters)" test $((d1 - d0)) -gt 1000
verdict "no flood packet reached the tenant" test "$received" = 0
ctl dos delete-signature "$tenant" ntp-monlist

step "automatic mitigation: a flood with no rule in place (auto_mitigation from the XDP samples)"
echo '{"sample_rate": 16, "auto_mitigation": {"pps": 300, "duration": "60s"}}' >"$work/dos.json"
ctl dos put "$tenant" -f "$work/dos.json"
sleep 3
# No operator signature is in place now: what signatures drop, the derived
# ones do (their per-rule series come and go with the mitigation).
autodrops() { metric 'nfhost_dos_packets_total{reason="signature_drop"}'; }
a0=$(autodrops)
flood 25 2000 >/dev/null & fpid=$!
auto_dropping() { (($(autodrops) > a0)); }
took=$(wait_for 30 auto_dropping) || took=
wait $fpid || true
for e in edge1 edge2; do on "$e" grep -h "automatic DoS mitigation" /var/log/nsd.log | grep -v ended | tail -n 1 | sed "s/.*victim=/  $e: victim=/"; done || true
echo "XDP dropped $(($(autodrops) - a0)) flood packets by derived signatures"
verdict "the flood was dropped by an automatic signature ${took:+(first drops ${took} s after it started)}" test -n "$took"
verdict "the client still reaches 203.0.113.1" at client ping -c2 -W2 -I 192.0.2.100 203.0.113.1
echo '{}' >"$work/dos.json"
ctl dos put "$tenant" -f "$work/dos.json"

step "an edge lost without losing flows: drain edge1 during TCP transfers, then stop it (nsd stopped, uplink down)"
at server sh -c "kill \$(cat /tmp/tcp.pid) 2>/dev/null; nohup python3 -c '
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"203.0.113.1\", 5001)); s.listen(64)
def h(c):
    n = 0
    while True:
        d = c.recv(65536)
        if not d: break
        n += len(d)
    c.sendall(str(n).encode()); c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=h, args=(c,), daemon=True).start()' </dev/null >/dev/null 2>&1 & echo \$! >/tmp/tcp.pid"
sleep 1
tcp_transfer() { # tcp_transfer N SECONDS: fails unless every connection delivered every byte
  at client python3 -c '
import socket, sys, threading, time
n, secs, res = int(sys.argv[1]), float(sys.argv[2]), []
def run():
    try:
        c = socket.create_connection(("203.0.113.1", 5001), timeout=10, source_address=("192.0.2.100", 0))
        sent, end = 0, time.time() + secs
        while time.time() < end:
            c.sendall(b"x" * 1024); sent += 1024; time.sleep(0.02)
        c.shutdown(socket.SHUT_WR); res.append(int(c.recv(64) or b"-1") == sent)
    except OSError:
        res.append(False)
ts = [threading.Thread(target=run) for _ in range(n)]
[t.start() for t in ts]; [t.join() for t in ts]
print("%d of %d connections delivered every byte" % (sum(res), n)); sys.exit(0 if all(res) else 1)' "$@"
}
tcp_transfer 8 20 >"$work/tcp-drain" & tpid=$!
sleep 3
ctl drain edge1
took=$(wait_for 30 only_edge2) || took=
verdict "nsctl drain edge1: the router dropped edge1's paths ${took:+after ${took} s}" test -n "$took"
on edge1 /vagrant/scripts/lab/vm-nsd.sh edge1 stop
on edge1 ip link set uplink down
answered=$(flows 16)
verdict "edge1 stopped: all 16 flows go on through edge2" test "$answered" = 16
wait $tpid && tcp_ok=1 || tcp_ok=0
echo "TCP during the drain and the stop: $(cat "$work/tcp-drain")"
verdict "TCP transfers running through the drain and the stop lost nothing" test "$tcp_ok" = 1

echo
echo "vagrant-lab: verdicts took $(elapsed "$t_all") s in all (from the start of the script)"
if ((failed)); then
  echo "vagrant-lab: FAILED; nsd logs:"
  for e in edge1 edge2; do on "$e" tail -n 20 /var/log/nsd.log | sed "s/^/$e: /" || true; done
  exit 1
fi
echo "vagrant-lab: all verdicts PASS"
