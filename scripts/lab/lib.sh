# Reads scripts/lab/topology (sourced by scripts/lab.sh, provision.sh and
# vagrant-lab.sh). LAB_TOPOLOGY overrides the file.
lab_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
topology=${LAB_TOPOLOGY:-$lab_dir/topology}
[[ -r $topology ]] || { echo "lab: no topology file $topology" >&2; exit 1; }

# topo KIND: the fields of every KIND line, without the keyword.
topo() { awk -v k="$1" '$1 == k {$1 = ""; sub(/^ /, ""); print}' "$topology"; }
# topo_host NAME FIELD: one field of a host line (role, vm, memory, gre_backend).
topo_host() {
  local col
  case $2 in role) col=3 ;; vm) col=4 ;; memory) col=5 ;; gre_backend) col=6 ;; *) return 1 ;; esac
  awk -v h="$1" -v c="$col" '$1 == "host" && $2 == h {v = $c; if (v == "-") v = ""; print v; found = 1} END {exit !found}' "$topology"
}
# topo_hosts [ROLE]: host names in file order.
topo_hosts() { awk -v r="${1:-}" '$1 == "host" && (r == "" || $3 == r) {print $2}' "$topology"; }
# topo_ends HOST: "IF ADDR PEER_HOST PEER_IF PEER_ADDR LINK" for each link end on HOST.
topo_ends() {
  awk -v h="$1" '$1 == "link" {
    if ($3 == h) print $4, $5, $6, $7, $8, $2
    if ($6 == h) print $7, $8, $3, $4, $5, $2
  }' "$topology"
}
# topo_ctl HOST: the host's address on the VMs' control network.
topo_ctl() { awk -v h="$1" '$1 == "ctl" && $2 == h {print $3}' "$topology"; }
# topo_addr_of HOST IF: the address (without length) on that interface.
topo_addr_of() { topo_ends "$1" | awk -v i="$2" '$1 == i {sub(/\/.*/, "", $2); print $2}'; }
