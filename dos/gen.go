// Package dos is nfhost's shared XDP DoS layer on the uplink.
//
// This is its first slice: the BPF program parses Ethernet (up to two VLAN
// tags), IPv4 and IPv6, applies the combined allow/deny list on the source
// address (one LPM trie; allow always wins), and counts every outcome per
// CPU. Malformed and non-IP packets pass, counted. Signatures, rate limits,
// sampling, attachment with pinned links and the nsd reconciler are not
// built yet.
package dos

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../dos/include -I/usr/include/x86_64-linux-gnu" -target bpfel -type lpm_key -type stats -type bitmap -type sig_meta -type settings dosBPF bpf/xdp_dos.c
