#!/usr/bin/env bash
# nsd on an edge VM of the Vagrant lab (the namespace lab runs nsd itself,
# with --host-netns): start, stop, restart, status. Consul is the router's
# ($LAB_CONSUL_ADDR), metrics on the edge's control address, port 9469.
#
#   vm-nsd.sh HOST start|stop|restart|status
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
host=${1:?usage: vm-nsd.sh HOST start|stop|restart|status} action=${2:-start}
run=${LAB_RUN:-/run/nfhost-lab}
bin=${LAB_BIN:-/vagrant/bin}
pidf=$run/nsd.pid
consul_addr=${LAB_CONSUL_ADDR:-$(topo_ctl "$(topo_hosts router | head -1)"):8500}
backend=${LAB_GRE_BACKEND:-$(topo_host "$host" gre_backend)}
mkdir -p "$run"
alive() { [[ -s $pidf ]] && kill -0 "$(cat "$pidf")" 2>/dev/null; }

start() {
  alive && return 0
  local args=(--source consul --consul-addr "$consul_addr" --host-id "$host" --uplink uplink
    --resync-interval 1s --bgp-config "$run/bgp-$host.json" --metrics-addr "$(topo_ctl "$host"):9469")
  if [[ -n $backend ]]; then
    args+=(--gre-backend "$backend")
    echo "$backend" >"$run/gre-backend"
  fi
  # Its own session, no terminal: it outlives Vagrant's ssh.
  setsid "$bin/nsd" "${args[@]}" </dev/null >>/var/log/nsd.log 2>&1 &
  echo $! >"$pidf"
  echo "vm-nsd $host: nsd started (pid $!, Consul $consul_addr, GRE backend $(cat "$run/gre-backend" 2>/dev/null || echo default))" >&2
}
stop() {
  alive || return 0
  kill "$(cat "$pidf")"
  for _ in $(seq 100); do alive || break; sleep 0.1; done
  rm -f "$pidf"
}
case $action in
start) start ;;
stop) stop ;;
restart) stop; start ;;
status) alive && echo "nsd running (pid $(cat "$pidf"))" || { echo "nsd not running"; exit 1; } ;;
*) echo "vm-nsd: unknown action $action" >&2; exit 1 ;;
esac
