// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The benchmark baseline: parse Ethernet and IPv4, one LPM trie lookup on
// the source address, drop on a hit. It is what an exact-or-prefix drop
// list costs at least; BenchmarkXDP reports the full program against it.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char __license[] SEC("license") = "Dual BSD/GPL";

struct lpm_key4 {
	__u32 prefixlen;
	__u32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_key4);
	__type(value, __u32);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} lookup_trie SEC(".maps");

SEC("xdp")
int lookup_only(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(0x0800))
		return XDP_PASS;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > data_end)
		return XDP_PASS;
	struct lpm_key4 k = {.prefixlen = 32, .addr = ip->saddr};
	if (bpf_map_lookup_elem(&lookup_trie, &k))
		return XDP_DROP;
	return XDP_PASS;
}
