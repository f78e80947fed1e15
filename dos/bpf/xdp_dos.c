// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// nfhost's shared XDP DoS layer: packet parsing (Ethernet, up to two VLAN
// tags, IPv4 with options, IPv6), the combined allow/deny list on the
// source address, and the signature classifier. IPv4 addresses are looked up as IPv4-mapped
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
	COUNTER_SIG_DROP,   // dropped by a signature
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


// ---- Signature classifier -------------------------------------------------
//
// Up to 256 signatures, in priority order (bit 0 first). For every field,
// user space writes, per field value, the bitmap of signatures that accept
// that value (a signature without a condition on the field accepts all).
// A packet's matching signatures are the AND of its fields' bitmaps; the
// lowest set bit wins. Per-field array lookups cost a few ns each, so the
// stage does not scan signatures one by one.

#define SIG_WORDS 4
#define SIG_MAX (SIG_WORDS * 64)
#define NO_PORT 65536   // index for packets without ports
#define NO_L4 256       // index for packets without TCP flags / ICMP header

struct bitmap {
	__u64 w[SIG_WORDS];
};

struct sig_meta {
	__u32 action;      // enum sig_action
	__u32 _pad;
	__u64 expires_ns;  // CLOCK_BOOTTIME; 0: never
};

enum sig_action {
	SIG_DROP = 1,
	SIG_MONITOR = 2,
};

// Global settings, index 0.
struct settings {
	__u32 nsigs;   // 0: skip the signature stage
	__u32 monitor; // 1: count only, never drop
	// Signatures that constrain the source / destination address or the
	// family. A trie lookup that can only remove such signatures is
	// skipped when none of them is still a candidate.
	struct bitmap needs_src;
	struct bitmap needs_dst;
};

#define FIELD_ARRAY(name, n) \
	struct { \
		__uint(type, BPF_MAP_TYPE_ARRAY); \
		__type(key, __u32); \
		__type(value, struct bitmap); \
		__uint(max_entries, n); \
		__uint(pinning, LIBBPF_PIN_BY_NAME); \
	} name SEC(".maps")

FIELD_ARRAY(nfh_sig_proto, 257);     // index: L4 protocol
FIELD_ARRAY(nfh_sig_sport, 65537);   // index: source port, NO_PORT
FIELD_ARRAY(nfh_sig_dport, 65537);   // index: destination port, NO_PORT
FIELD_ARRAY(nfh_sig_len, 65536);     // index: IP packet length
FIELD_ARRAY(nfh_sig_ttl, 256);       // index: TTL / hop limit
FIELD_ARRAY(nfh_sig_flags, 257);     // index: TCP flags byte, NO_L4
FIELD_ARRAY(nfh_sig_itype, 257);     // index: ICMP type, NO_L4
FIELD_ARRAY(nfh_sig_icode, 257);     // index: ICMP code, NO_L4

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_key);
	__type(value, struct bitmap);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_sig_src SEC(".maps"), nfh_sig_dst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct sig_meta);
	__uint(max_entries, SIG_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_sig_meta SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct stats);
	__uint(max_entries, SIG_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_sig_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct settings);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_settings SEC(".maps");

// and_bitmap narrows acc to b (a missing entry matches nothing) and says
// whether any candidate is left.
static __always_inline int and_bitmap(struct bitmap *acc, struct bitmap *b)
{
	if (!b)
		return 0;
	__u64 any = 0;
#pragma unroll
	for (int i = 0; i < SIG_WORDS; i++) {
		acc->w[i] &= b->w[i];
		any |= acc->w[i];
	}
	return any != 0;
}

static __always_inline int and_field(struct bitmap *acc, void *map, __u32 idx)
{
	return and_bitmap(acc, bpf_map_lookup_elem(map, &idx));
}

static __always_inline int and_lpm(struct bitmap *acc, void *map, struct lpm_key *k)
{
	return and_bitmap(acc, bpf_map_lookup_elem(map, k));
}

// ctz64 is the index of the lowest set bit of x (x != 0). clang 14's BPF
// backend cannot lower __builtin_ctzll.
static __always_inline __u32 ctz64(__u64 x)
{
	__u32 n = 0;
	if (!(x & 0xffffffffULL)) {
		n += 32;
		x >>= 32;
	}
	if (!(x & 0xffffULL)) {
		n += 16;
		x >>= 16;
	}
	if (!(x & 0xffULL)) {
		n += 8;
		x >>= 8;
	}
	if (!(x & 0xfULL)) {
		n += 4;
		x >>= 4;
	}
	if (!(x & 0x3ULL)) {
		n += 2;
		x >>= 2;
	}
	if (!(x & 0x1ULL))
		n += 1;
	return n;
}

struct pkt_fields {
	__u32 proto, sport, dport, len, ttl, flags, itype, icode;
};

static __always_inline int intersects(struct bitmap *a, struct bitmap *b)
{
	__u64 any = 0;
#pragma unroll
	for (int i = 0; i < SIG_WORDS; i++)
		any |= a->w[i] & b->w[i];
	return any != 0;
}

// classify returns the index of the first live matching signature, or -1.
static __always_inline int classify(struct settings *cfg, struct pkt_fields *f, struct lpm_key *src, struct lpm_key *dst)
{
	struct bitmap acc;
#pragma unroll
	for (int i = 0; i < SIG_WORDS; i++)
		acc.w[i] = ~0ULL;
	if (!and_field(&acc, &nfh_sig_proto, f->proto) || !and_field(&acc, &nfh_sig_dport, f->dport) ||
	    !and_field(&acc, &nfh_sig_sport, f->sport) || !and_field(&acc, &nfh_sig_len, f->len) ||
	    !and_field(&acc, &nfh_sig_ttl, f->ttl) || !and_field(&acc, &nfh_sig_flags, f->flags) ||
	    !and_field(&acc, &nfh_sig_itype, f->itype) || !and_field(&acc, &nfh_sig_icode, f->icode))
		return -1;
	if (intersects(&acc, &cfg->needs_dst) && !and_lpm(&acc, &nfh_sig_dst, dst))
		return -1;
	if (intersects(&acc, &cfg->needs_src) && !and_lpm(&acc, &nfh_sig_src, src))
		return -1;
#pragma unroll
	for (int i = 0; i < SIG_WORDS; i++) {
		__u64 w = acc.w[i];
		for (int tries = 0; tries < 4; tries++) {
			if (!w)
				break;
			__u32 idx = i * 64 + ctz64(w);
			struct sig_meta *m = bpf_map_lookup_elem(&nfh_sig_meta, &idx);
			// The clock is read only for signatures that expire.
			if (m && (m->expires_ns == 0 || bpf_ktime_get_boot_ns() < m->expires_ns))
				return idx;
			w &= w - 1; // expired: try the next one
		}
	}
	return -1;
}

static __always_inline void count_sig(__u32 idx, __u64 bytes)
{
	struct stats *s = bpf_map_lookup_elem(&nfh_sig_counters, &idx);
	if (s) {
		s->packets++;
		s->bytes += bytes;
	}
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
	struct lpm_key dkey = {.prefixlen = 128};
	struct pkt_fields f = {.sport = NO_PORT, .dport = NO_PORT, .flags = NO_L4, .itype = NO_L4, .icode = NO_L4};
	void *l4;
	int fragment = 0;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;
		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return count(COUNTER_MALFORMED, len, XDP_PASS);
		if ((void *)ip + ip->ihl * 4 > data_end)
			return count(COUNTER_MALFORMED, len, XDP_PASS);
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &ip->saddr, 4);
		dkey.addr[10] = 0xff;
		dkey.addr[11] = 0xff;
		__builtin_memcpy(&dkey.addr[12], &ip->daddr, 4);
		f.proto = ip->protocol;
		f.len = bpf_ntohs(ip->tot_len);
		f.ttl = ip->ttl;
		fragment = (ip->frag_off & bpf_htons(0x1fff)) != 0;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;
		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return count(COUNTER_MALFORMED, len, XDP_PASS);
		__builtin_memcpy(key.addr, &ip6->saddr, 16);
		__builtin_memcpy(dkey.addr, &ip6->daddr, 16);
		// Extension headers are not walked: their packets show the
		// extension header as protocol and carry no ports.
		f.proto = ip6->nexthdr;
		f.len = bpf_ntohs(ip6->payload_len) + 40;
		f.ttl = ip6->hop_limit;
		l4 = ip6 + 1;
	} else {
		return count(COUNTER_NON_IP, len, XDP_PASS);
	}
	if (f.len > 65535)
		f.len = 65535;
	if (!fragment) {
		if (f.proto == IPPROTO_TCP) {
			struct tcphdr *th = l4;
			if ((void *)(th + 1) <= data_end) {
				f.sport = bpf_ntohs(th->source);
				f.dport = bpf_ntohs(th->dest);
				f.flags = ((__u8 *)th)[13];
			}
		} else if (f.proto == IPPROTO_UDP) {
			struct udphdr *uh = l4;
			if ((void *)(uh + 1) <= data_end) {
				f.sport = bpf_ntohs(uh->source);
				f.dport = bpf_ntohs(uh->dest);
			}
		} else if (f.proto == IPPROTO_ICMP || f.proto == 58) {
			__u8 *ic = l4;
			if ((void *)(ic + 2) <= data_end) {
				f.itype = ic[0];
				f.icode = ic[1];
			}
		}
	}

	__u32 *v = bpf_map_lookup_elem(&nfh_src_lists, &key);
	if (v && *v == VERDICT_ALLOW)
		return count(COUNTER_ALLOW, len, XDP_PASS);
	if (v && *v == VERDICT_DENY)
		return count(COUNTER_DENY, len, XDP_DROP);

	__u32 zero = 0;
	struct settings *cfg = bpf_map_lookup_elem(&nfh_settings, &zero);
	if (cfg && cfg->nsigs) {
		int sig = classify(cfg, &f, &key, &dkey);
		if (sig >= 0) {
			__u32 idx = sig;
			count_sig(idx, len);
			struct sig_meta *m = bpf_map_lookup_elem(&nfh_sig_meta, &idx);
			if (m && m->action == SIG_DROP && !cfg->monitor)
				return count(COUNTER_SIG_DROP, len, XDP_DROP);
		}
	}
	return count(COUNTER_PASS, len, XDP_PASS);
}
