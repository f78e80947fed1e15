// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// nfhost's shared XDP DoS layer, first slice: packet parsing (Ethernet, up
// to two VLAN tags, IPv4 with options, IPv6) and the combined allow/deny
// list on the source address. IPv4 addresses are looked up as IPv4-mapped
// IPv6 (::ffff:a.b.c.d) so that one LPM trie serves both families with one
// lookup; the value is the verdict, and user space resolves overlaps so
// that an allow entry always wins over a deny entry (a deny prefix covered
// by an allow prefix is never written).
//
// Anything the program does not understand passes to the kernel, counted.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

char __license[] SEC("license") = "Dual BSD/GPL";

enum verdict {
	VERDICT_NONE = 0,
	VERDICT_ALLOW = 1,
	VERDICT_DENY = 2,
};

// Global counters; index by enum counter.
enum counter {
	COUNTER_PASS = 0,   // no stage matched
	COUNTER_ALLOW,      // passed by the allow list
	COUNTER_DENY,       // dropped by the deny list
	COUNTER_NON_IP,     // neither IPv4 nor IPv6: passed
	COUNTER_MALFORMED,  // truncated or invalid headers: passed
	COUNTER_MAX,
};

struct lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct stats {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_key);
	__type(value, __u32);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_src_lists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct stats);
	__uint(max_entries, COUNTER_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_counters SEC(".maps");

static __always_inline int count(__u32 idx, __u64 bytes, int action)
{
	struct stats *s = bpf_map_lookup_elem(&nfh_counters, &idx);
	if (s) {
		s->packets++;
		s->bytes += bytes;
	}
	return action;
}

SEC("xdp")
int nfhost_dos(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	struct ethhdr *eth = data;
	void *cur;
	__u16 proto;

	if ((void *)(eth + 1) > data_end)
		return count(COUNTER_MALFORMED, len, XDP_PASS);
	proto = eth->h_proto;
	cur = eth + 1;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		struct vlan_hdr *vh = cur;
		if ((void *)(vh + 1) > data_end)
			return count(COUNTER_MALFORMED, len, XDP_PASS);
		proto = vh->h_vlan_encapsulated_proto;
		cur = vh + 1;
	}

	struct lpm_key key = {.prefixlen = 128};
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;
		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return count(COUNTER_MALFORMED, len, XDP_PASS);
		if ((void *)ip + ip->ihl * 4 > data_end)
			return count(COUNTER_MALFORMED, len, XDP_PASS);
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &ip->saddr, 4);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;
		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return count(COUNTER_MALFORMED, len, XDP_PASS);
		__builtin_memcpy(key.addr, &ip6->saddr, 16);
	} else {
		return count(COUNTER_NON_IP, len, XDP_PASS);
	}

	__u32 *v = bpf_map_lookup_elem(&nfh_src_lists, &key);
	if (v && *v == VERDICT_ALLOW)
		return count(COUNTER_ALLOW, len, XDP_PASS);
	if (v && *v == VERDICT_DENY)
		return count(COUNTER_DENY, len, XDP_DROP);
	return count(COUNTER_PASS, len, XDP_PASS);
}
