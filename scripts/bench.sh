#!/usr/bin/env bash
# make bench: runs the benchmarks (root; kernel and Consul) and prints the
# results that docs/BENCHMARKS.md records. Set NFHOST_BENCH_TENANTS to
# change the tenant count (default 1000).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export NFHOST_CONSUL=$(scripts/install-consul.sh)
# The peer baseline of BenchmarkXDP: xdp-filter's BPF object from xdp-tools.
if [[ ! -f /usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_ip.o ]] && [[ $(id -u) -eq 0 ]]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends xdp-tools >/dev/null || \
    echo "bench: xdp-tools not installed; BenchmarkXDP will skip the xdp-filter baseline" >&2
fi
out=${BENCH_OUT:-$root/.cache/bench-$(date +%Y%m%d-%H%M%S).txt}
mkdir -p "$(dirname "$out")"
{
  go test -run '^$' -bench . -benchtime 1x -timeout 60m ./e2e/ ./firewall/
  go test -run '^$' -bench . -benchtime 200x ./routing/
  go test -run '^$' -bench . -benchtime 100x ./nsd/ ./nsd/plan/
  go test -run '^$' -bench . -benchtime 1x -count 3 ./dos/
  go test -run '^$' -bench . -benchtime 1x -count 3 ./tunnels/
} | tee "$out"
echo "results saved in $out; copy the figures into docs/BENCHMARKS.md" >&2
