// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// nfhost's shared XDP DoS layer. Per packet, in order:
//   0. parse Ethernet (up to two VLAN tags), IPv4 (options) or IPv6, L4;
//      look the destination up in nfh_dst: its tenant, the signatures whose
//      destination condition covers it, its rate-limit rule, sample rate;
//   1. allow lists (global trie, then the tenant's): pass;
//   2. deny lists (same lookups): drop;
//   3. signatures: per-field bitmaps ANDed, the lowest set bit wins;
//      drop, rate-limit or monitor (count only);
//   4. the destination's rate limit (GCRA token bucket in an LRU map);
//   5. TCP protection (tcp_protect.h): SYN cookies, out-of-state TCP;
//   6. 1-in-N sampling of headers and verdict to a ring buffer;
//   7. counters: global by reason, per signature, per rate limit, per tenant.
// Every trie comes in two families: IPv4 keys are 4 bytes, so an IPv4
// lookup compares a quarter of what an IPv4-mapped IPv6 key would at every
// trie node. A list entry's value is its verdict, and user space resolves
// overlaps so that allow always wins (a deny prefix covered by an allow
// prefix is never written). Rate-limit buckets key IPv4 as IPv4-mapped.
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
	VERDICT_DENY_MONITOR = 3, // deny entry of a scope in monitor mode
};

// Global counters; index by enum counter.
enum counter {
	COUNTER_PASS = 0,   // no stage matched
	COUNTER_ALLOW,      // passed by the allow list
	COUNTER_DENY,       // dropped by the deny list
	COUNTER_NON_IP,     // neither IPv4 nor IPv6: passed
	COUNTER_MALFORMED,  // truncated or invalid headers: passed
	COUNTER_SIG_DROP,   // dropped by a signature (drop or rate-limit action)
	COUNTER_RATE_DROP,  // dropped by a destination rate limit
	COUNTER_MONITOR,    // matched a monitor-mode entry, rule or limit (not dropped)
	COUNTER_TENANT_ALLOW, // passed by a tenant's allow list
	COUNTER_TENANT_DENY,  // dropped by a tenant's deny list
	COUNTER_SAMPLED,    // copied to the sample ring buffer
	COUNTER_SAMPLE_LOST,// ring buffer full: sample lost
	COUNTER_SYN_COOKIE, // SYN answered with a SYN cookie (XDP_TX)
	COUNTER_COOKIE_INVALID, // ACK of no flow without a valid cookie: dropped
	COUNTER_OUT_OF_STATE,   // TCP of no flow: dropped
	COUNTER_SYN_DROP,       // SYN the engaged protection cannot answer: dropped
	COUNTER_MAX,
};

struct lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct lpm_key4 {
	__u32 prefixlen;
	__u32 addr; // network order
};

// TRIE declares an IPv6 trie and its IPv4 twin (name4).
#define TRIE(name, value_t, n) \
	struct { \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE); \
		__type(key, struct lpm_key); \
		__type(value, value_t); \
		__uint(max_entries, n); \
		__uint(map_flags, BPF_F_NO_PREALLOC); \
		__uint(pinning, LIBBPF_PIN_BY_NAME); \
	} name SEC(".maps"); \
	struct { \
		__uint(type, BPF_MAP_TYPE_LPM_TRIE); \
		__type(key, struct lpm_key4); \
		__type(value, value_t); \
		__uint(max_entries, n); \
		__uint(map_flags, BPF_F_NO_PREALLOC); \
		__uint(pinning, LIBBPF_PIN_BY_NAME); \
	} name##4 SEC(".maps")

// A packet's addresses in both key forms; v4 says which one applies.
struct addrs {
	int v4;
	struct lpm_key src, dst;     // IPv6, or IPv4-mapped (rate-limit keys)
	struct lpm_key4 src4, dst4;
};

#define LOOKUP(v4, a, map, side) \
	((v4) ? bpf_map_lookup_elem(&map##4, &(a)->side##4) : bpf_map_lookup_elem(&map, &(a)->side))

struct stats {
	__u64 packets;
	__u64 bytes;
};

TRIE(nfh_src_lists, __u32, 262144);

// The IPv4 half of the global lists again, as a direct table over the
// 2^24 /24 blocks: 4 bits per block (16 blocks per word), holding the
// block's verdict when no list prefix longer than /24 lies inside it, and
// SRC24_TRIE when one does (then the trie decides). One array lookup
// instead of a walk down a 100,000-prefix trie, whatever the list's shape.
#define SRC24_WORDS (1 << 20)
#define SRC24_TRIE 4
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, SRC24_WORDS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_src24 SEC(".maps");

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


// ---- Destination: tenant, signature scope, rate limit, sampling ------------

#define SIG_WORDS 4
#define SIG_MAX (SIG_WORDS * 64)
#define MAX_TENANTS 8192
#define MAX_RATE_RULES 16384

struct bitmap {
	__u64 w[SIG_WORDS];
};

// dst_info is the value of nfh_dst; user space computes each entry from
// every prefix that covers it, so the longest match carries everything.
struct dst_info {
	__u32 tenant;      // tenant index, 0: none
	__u32 flags;       // DST_*
	__u32 sample_rate; // 1 in N for this destination; 0: the global rate
	__u32 rate_rule;   // rate-limit rule index + 1; 0: none
	struct bitmap sigs; // signatures whose destination / tenant scope covers it
};

#define DST_TENANT_LISTS 1 // the tenant has allow/deny entries

TRIE(nfh_dst, struct dst_info, 65536);

// Tenant-scoped source lists: the tenant index is part of the key.
struct tenant_key {
	__u32 prefixlen; // 32 + source prefix length
	__u32 tenant;
	__u8 addr[16];
};

struct tenant_key4 {
	__u32 prefixlen; // 32 + source prefix length
	__u32 tenant;
	__u32 addr;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct tenant_key);
	__type(value, __u32);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_tenant_lists SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct tenant_key4);
	__type(value, __u32);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_tenant_lists4 SEC(".maps");

// rule_stats: per signature, per rate-limit rule and per tenant.
struct rule_stats {
	__u64 packets;
	__u64 bytes;
	__u64 dropped;
	__u64 dropped_bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct rule_stats);
	__uint(max_entries, MAX_TENANTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_tenant_counters SEC(".maps");

// Names of tenants, signatures and rate-limit rules by index, for user
// space only: a restarted nsd recovers its index assignment from them, so
// counters stay with their tenant or rule. Tenants at [0, MAX_TENANTS),
// signatures at NAMES_SIGS, rate-limit rules at NAMES_RATES.
#define NAMES_SIGS MAX_TENANTS
#define NAMES_RATES (MAX_TENANTS + SIG_MAX)

struct name {
	__u8 s[64];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct name);
	__uint(max_entries, MAX_TENANTS + SIG_MAX + MAX_RATE_RULES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_names SEC(".maps");

// ---- Rate limits -----------------------------------------------------------
//
// A rate-limit rule is a GCRA (token bucket) on packets and/or bits per
// second. The bucket state is the theoretical arrival time per dimension;
// a packet conforms while it is at most burst_ns ahead of now. Buckets
// live in an LRU hash, keyed by rule and destination address (per ip) or
// rule alone (per prefix / per signature). Updates from several CPUs race
// without a lock: a lost update lets at most one extra packet per CPU
// through, which is the usual trade for not serialising the fast path.

struct rate_rule {
	__u64 pkt_cost_ns;   // 1e9 / pps; 0: no packet limit
	__u64 byte_cost_fp;  // (8e9 << 16) / bps per byte; 0: no bit limit
	__u64 burst_ns;      // tolerance
	__u32 per_ip;        // 1: one bucket per destination address
	__u32 monitor;       // 1: count, never drop
};

struct rate_key {
	__u32 rule;
	__u8 addr[16];
};

struct rate_bucket {
	__u64 tat_pkt;
	__u64 tat_byte;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct rate_rule);
	__uint(max_entries, MAX_RATE_RULES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_rate_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct rate_key);
	__type(value, struct rate_bucket);
	__uint(max_entries, 131072);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct rule_stats);
	__uint(max_entries, MAX_RATE_RULES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_rate_counters SEC(".maps");

enum rate_result {
	RATE_OK = 0,
	RATE_DROP = 1,
	RATE_MONITOR = 2, // over the limit, monitor mode
};

static __always_inline void count_rule(void *map, __u32 idx, __u64 bytes, int dropped)
{
	struct rule_stats *s = bpf_map_lookup_elem(map, &idx);
	if (s) {
		s->packets++;
		s->bytes += bytes;
		if (dropped) {
			s->dropped++;
			s->dropped_bytes += bytes;
		}
	}
}

static __always_inline int rate_limit(__u32 rule_idx, struct lpm_key *dst, __u64 len)
{
	struct rate_rule *r = bpf_map_lookup_elem(&nfh_rate_rules, &rule_idx);
	if (!r)
		return RATE_OK;
	struct rate_key k = {.rule = rule_idx};
	if (r->per_ip)
		__builtin_memcpy(k.addr, dst->addr, 16);
	// The coarse clock (jiffies resolution) costs a fraction of the precise
	// one; it is ample against a 100 ms burst tolerance.
	__u64 now = bpf_ktime_get_coarse_ns();
	__u64 cost_b = (len * r->byte_cost_fp) >> 16;
	struct rate_bucket *b = bpf_map_lookup_elem(&nfh_buckets, &k);
	int res = RATE_OK;
	if (!b) {
		struct rate_bucket nb = {.tat_pkt = now + r->pkt_cost_ns, .tat_byte = now + cost_b};
		bpf_map_update_elem(&nfh_buckets, &k, &nb, BPF_ANY);
	} else {
		__u64 tp = b->tat_pkt > now ? b->tat_pkt : now;
		__u64 tb = b->tat_byte > now ? b->tat_byte : now;
		if ((r->pkt_cost_ns && tp - now > r->burst_ns) || (r->byte_cost_fp && tb - now > r->burst_ns)) {
			res = r->monitor ? RATE_MONITOR : RATE_DROP;
		} else {
			b->tat_pkt = tp + r->pkt_cost_ns;
			b->tat_byte = tb + cost_b;
		}
	}
	count_rule(&nfh_rate_counters, rule_idx, len, res == RATE_DROP);
	return res;
}

// ---- Signature classifier -------------------------------------------------
//
// Up to 256 signatures, in priority order (bit 0 first). For every field,
// user space writes, per field value, the bitmap of signatures that accept
// that value (a signature without a condition on the field accepts all).
// A packet's matching signatures are the AND of its fields' bitmaps (the
// destination's comes from nfh_dst); the lowest set bit wins, after its
// expiry and payload bytes are checked. Per-field array lookups cost a few
// ns each, so the stage does not scan signatures one by one.

#define NO_PORT 65536   // index for packets without ports
// nfh_sig_l4 index: the TCP flags byte, ICMP_BASE + (type << 8 | code),
// or L4_NONE for packets with neither (one lookup for three fields).
#define ICMP_BASE 256
#define L4_NONE (ICMP_BASE + 65536)
#define PAYLOAD_MAX 16
#define PAYLOAD_OFF_MAX 1500

struct sig_meta {
	__u32 action;      // enum sig_action
	__u32 rate_rule;   // for SIG_RATELIMIT: rate-limit rule index
	__u64 expires_ns;  // CLOCK_BOOTTIME; 0: never
	__u16 pl_off;      // payload comparison: offset after the L4 header
	__u8 pl_len;       // bytes compared; 0: none
	__u8 pl_neg;       // 1: match when the bytes differ
	__u32 _pad;
	__u64 pl_mask[2];
	__u64 pl_value[2];
};

enum sig_action {
	SIG_DROP = 1,
	SIG_MONITOR = 2,
	SIG_RATELIMIT = 3,
};

// Global settings, index 0.
struct settings {
	__u32 nsigs;       // 0: skip the signature stage
	__u32 sample_rate; // 1 in N for destinations without their own; 0: off
	// Signatures that constrain the source address. The source trie lookup
	// is skipped when none of them is still a candidate.
	struct bitmap needs_src;
	// Signatures for destinations without an nfh_dst entry, per family
	// (global signatures without a destination condition).
	struct bitmap dst_v4;
	struct bitmap dst_v6;
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
FIELD_ARRAY(nfh_sig_l4, L4_NONE + 1); // index: see ICMP_BASE

TRIE(nfh_sig_src, struct bitmap, 1024);

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
	__type(value, struct rule_stats);
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
	__u32 proto, sport, dport, len, ttl, l4; // l4: nfh_sig_l4 index
	__u32 payload; // offset of the L4 payload from the packet start; 0: none
};

static __always_inline int intersects(struct bitmap *a, struct bitmap *b)
{
	__u64 any = 0;
#pragma unroll
	for (int i = 0; i < SIG_WORDS; i++)
		any |= a->w[i] & b->w[i];
	return any != 0;
}

// payload_matches compares the signature's payload bytes under its mask.
static __always_inline int payload_matches(struct xdp_md *ctx, struct sig_meta *m, __u32 payload)
{
	__u64 buf[2] = {0, 0};
	__u32 n = m->pl_len;
	if (!payload || n == 0 || n > PAYLOAD_MAX)
		return 0;
	// Linux 6.1's verifier does not narrow n to 1..16 from the n == 0
	// test (later ones do) and refuses a possibly zero-sized load:
	// bound it arithmetically as sample() does (a no-op for 1..16).
	asm volatile("" : "+r"(n));
	n = ((n - 1) & (PAYLOAD_MAX - 1)) + 1;
	__u32 off = payload + m->pl_off;
	if (bpf_xdp_load_bytes(ctx, off, buf, n) < 0)
		return 0; // too short: no match
	int eq = (buf[0] & m->pl_mask[0]) == m->pl_value[0] && (buf[1] & m->pl_mask[1]) == m->pl_value[1];
	return eq != m->pl_neg;
}

// classify returns the index of the first live matching signature, or -1.
static __always_inline int classify(struct xdp_md *ctx, struct settings *cfg, struct pkt_fields *f,
				    struct addrs *a, struct bitmap *dst_sigs, const int v4)
{
	struct bitmap acc = *dst_sigs;
	if (!and_bitmap(&acc, dst_sigs))
		return -1;
	if (!and_field(&acc, &nfh_sig_proto, f->proto) || !and_field(&acc, &nfh_sig_dport, f->dport) ||
	    !and_field(&acc, &nfh_sig_sport, f->sport) || !and_field(&acc, &nfh_sig_len, f->len) ||
	    !and_field(&acc, &nfh_sig_l4, f->l4) || !and_field(&acc, &nfh_sig_ttl, f->ttl))
		return -1;
	if (intersects(&acc, &cfg->needs_src) && !and_bitmap(&acc, LOOKUP(v4, a, nfh_sig_src, src)))
		return -1;
#pragma unroll
	for (int i = 0; i < SIG_WORDS; i++) {
		__u64 w = acc.w[i];
		for (int tries = 0; tries < 4; tries++) {
			if (!w)
				break;
			__u32 idx = i * 64 + ctz64(w);
			struct sig_meta *m = bpf_map_lookup_elem(&nfh_sig_meta, &idx);
			// The clock is read only for signatures that expire, the
			// payload only for signatures that compare it.
			if (m && (m->expires_ns == 0 || bpf_ktime_get_boot_ns() < m->expires_ns) &&
			    (m->pl_len == 0 || payload_matches(ctx, m, f->payload)))
				return idx;
			w &= w - 1; // expired or payload differs: try the next one
		}
	}
	return -1;
}

#include "tcp_protect.h"

// ---- Sampling ---------------------------------------------------------------

#define SAMPLE_BYTES 128

struct pkt_sample {
	__u64 ts_ns;       // CLOCK_MONOTONIC
	__u32 ifindex;
	__u32 pkt_len;
	__u32 cap_len;
	__u32 tenant;
	__u32 verdict;     // XDP_PASS or XDP_DROP
	__u32 reason;      // enum counter of the outcome
	__s32 rule;        // signature index, or -1
	__u32 _pad;
	__u8 data[SAMPLE_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_samples SEC(".maps");

static __always_inline void sample(struct xdp_md *ctx, __u32 tenant, __u32 verdict, __u32 reason, int rule, __u64 len)
{
	struct pkt_sample *s = bpf_ringbuf_reserve(&nfh_samples, sizeof(*s), 0);
	if (!s) {
		count(COUNTER_SAMPLE_LOST, len, 0);
		return;
	}
	__u32 cap = len < SAMPLE_BYTES ? len : SAMPLE_BYTES;
	// The verifier needs 1 <= cap <= SAMPLE_BYTES in the register passed
	// to the helper; hide cap from clang, which would drop the bounds
	// knowing len >= 14 here, and bound it arithmetically (a no-op for
	// 1..128).
	asm volatile("" : "+r"(cap));
	cap = ((cap - 1) & (SAMPLE_BYTES - 1)) + 1;
	s->ts_ns = bpf_ktime_get_ns();
	s->ifindex = ctx->ingress_ifindex;
	s->pkt_len = len;
	s->tenant = tenant;
	s->verdict = verdict;
	s->reason = reason;
	s->rule = rule;
	s->_pad = 0;
	if (bpf_xdp_load_bytes(ctx, 0, s->data, cap) < 0)
		cap = 0;
	s->cap_len = cap;
	bpf_ringbuf_submit(s, 0);
	count(COUNTER_SAMPLED, len, 0);
}

// ---- The program -------------------------------------------------------------

struct outcome {
	__u32 action; // XDP_PASS / XDP_DROP
	__u32 reason; // enum counter
	int rule;     // signature index or -1
};

// What finish_out needs: the outcome, the destination's tenant and sample
// rate, the packet's length.
struct finish_in {
	struct outcome o;
	__u32 tenant, rate;
	__u64 len;
};

// finish_out counts and samples the outcome (inlined in both programs: a
// call of its own cost nfhost_dos about 10-30 ns a packet).
static __always_inline int finish_out(struct xdp_md *ctx, struct finish_in *in)
{
	struct outcome o = in->o;
	__u64 len = in->len;
	count(o.reason, len, 0);
	if (in->tenant)
		count_rule(&nfh_tenant_counters, in->tenant, len, o.action == XDP_DROP);
	if (in->rate && bpf_get_prandom_u32() % in->rate == 0)
		sample(ctx, in->tenant, o.action, o.reason, o.rule, len);
	return o.action;
}

static __always_inline int finish(struct xdp_md *ctx, struct settings *cfg, struct dst_info *di, struct outcome o, __u64 len)
{
	struct finish_in in = {.o = o, .len = len, .rate = cfg ? cfg->sample_rate : 0};
	if (di) {
		in.tenant = di->tenant;
		if (di->sample_rate)
			in.rate = di->sample_rate;
	}
	return finish_out(ctx, &in);
}

// What decide hands the TCP program (per CPU: a tail call stays on its CPU).
struct tcp_call {
	__u32 tenant, rate;
	__u64 len;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__uint(value_size, sizeof(struct tcp_call)); // opaque to user space
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME); // shared across an in-place upgrade
} nfh_tcp_call SEC(".maps");

// Index 0: nfhost_tcp. Pinned: the kernel empties a program array when
// the last user-space reference to it goes, so an unpinned one would lose
// its entry when the nsd that filled it exits, while the attached
// nfhost_dos still calls into it. Each load puts its own nfhost_tcp in.
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_progs SEC(".maps");

// decide runs stages 1-6 on a parsed packet. It is inlined twice with v4
// constant, so that every trie lookup names its map directly: a call site
// shared by two maps would make the verifier fall back to an indirect call.
static __always_inline int decide(struct xdp_md *ctx, struct addrs *a, struct pkt_fields *f, __u64 len, const int v4)
{
	__u32 zero = 0;
	struct settings *cfg = bpf_map_lookup_elem(&nfh_settings, &zero);
	struct dst_info *di = LOOKUP(v4, a, nfh_dst, dst);
	struct outcome o = {.action = XDP_PASS, .reason = COUNTER_PASS, .rule = -1};

	// 1-2. Allow and deny lists: global, then the tenant's. Allow wins.
	__u32 gv = SRC24_TRIE, tv = VERDICT_NONE;
	if (v4) {
		__u32 block = bpf_ntohl(a->src4.addr) >> 8, w = block >> 4;
		__u64 *word = bpf_map_lookup_elem(&nfh_src24, &w);
		if (word)
			gv = (*word >> ((block & 15) * 4)) & 15;
	}
	if (gv == SRC24_TRIE) {
		__u32 *v = LOOKUP(v4, a, nfh_src_lists, src);
		gv = v ? *v : VERDICT_NONE;
	}
	if (gv == VERDICT_ALLOW) {
		o.reason = COUNTER_ALLOW;
		return finish(ctx, cfg, di, o, len);
	}
	if (di && (di->flags & DST_TENANT_LISTS)) {
		__u32 *t;
		if (v4) {
			struct tenant_key4 tk = {.prefixlen = 32 + 32, .tenant = di->tenant, .addr = a->src4.addr};
			t = bpf_map_lookup_elem(&nfh_tenant_lists4, &tk);
		} else {
			struct tenant_key tk = {.prefixlen = 32 + 128, .tenant = di->tenant};
			__builtin_memcpy(tk.addr, a->src.addr, 16);
			t = bpf_map_lookup_elem(&nfh_tenant_lists, &tk);
		}
		tv = t ? *t : VERDICT_NONE;
		if (tv == VERDICT_ALLOW) {
			o.reason = COUNTER_TENANT_ALLOW;
			return finish(ctx, cfg, di, o, len);
		}
	}
	if (gv == VERDICT_DENY) {
		o.action = XDP_DROP;
		o.reason = COUNTER_DENY;
		return finish(ctx, cfg, di, o, len);
	}
	if (tv == VERDICT_DENY) {
		o.action = XDP_DROP;
		o.reason = COUNTER_TENANT_DENY;
		return finish(ctx, cfg, di, o, len);
	}
	if (gv == VERDICT_DENY_MONITOR || tv == VERDICT_DENY_MONITOR)
		count(COUNTER_MONITOR, len, 0);

	// 3. Signatures.
	if (cfg && cfg->nsigs) {
		struct bitmap *dsigs = di ? &di->sigs : v4 ? &cfg->dst_v4 : &cfg->dst_v6;
		int sig = classify(ctx, cfg, f, a, dsigs, v4);
		if (sig >= 0) {
			__u32 idx = sig;
			struct sig_meta *m = bpf_map_lookup_elem(&nfh_sig_meta, &idx);
			int drop = 0;
			if (m && m->action == SIG_DROP) {
				drop = 1;
			} else if (m && m->action == SIG_RATELIMIT) {
				int r = rate_limit(m->rate_rule, &a->dst, len);
				drop = r == RATE_DROP;
				if (r == RATE_MONITOR)
					count(COUNTER_MONITOR, len, 0);
			} else {
				count(COUNTER_MONITOR, len, 0);
			}
			count_rule(&nfh_sig_counters, idx, len, drop);
			if (drop) {
				o.action = XDP_DROP;
				o.reason = COUNTER_SIG_DROP;
				o.rule = sig;
				return finish(ctx, cfg, di, o, len);
			}
		}
	}

	// 4. The destination's rate limit.
	if (di && di->rate_rule) {
		int r = rate_limit(di->rate_rule - 1, &a->dst, len);
		if (r == RATE_DROP) {
			o.action = XDP_DROP;
			o.reason = COUNTER_RATE_DROP;
			return finish(ctx, cfg, di, o, len);
		}
		if (r == RATE_MONITOR)
			count(COUNTER_MONITOR, len, 0);
	}

	// 5. TCP protection: SYN cookies, out-of-state TCP, in a program of
	// its own (tail call: verified apart from the stages before it). If
	// it is missing, the packet passes as if unprotected.
	// Every stage before passed the packet (o is the default outcome).
	// This block stays small: it runs on every path the verifier walks.
	// Only the destination is tested here; nfhost_tcp reads the headers
	// again (a test on a header field here would cost the verifier a
	// walk of every path before it twice).
	if (di && (di->flags & DST_TCP)) {
		__u32 zero = 0;
		struct tcp_call *tc = bpf_map_lookup_elem(&nfh_tcp_call, &zero);
		if (tc) {
			tc->tenant = di->tenant;
			tc->rate = di->sample_rate ? di->sample_rate : cfg ? cfg->sample_rate : 0;
			tc->len = len;
			bpf_tail_call(ctx, &nfh_progs, 0);
		}
	}
	return finish(ctx, cfg, di, o, len);
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

	struct addrs a = {.src = {.prefixlen = 128}, .dst = {.prefixlen = 128}, .src4 = {.prefixlen = 32}, .dst4 = {.prefixlen = 32}};
	struct pkt_fields f = {.sport = NO_PORT, .dport = NO_PORT, .l4 = L4_NONE};
	void *l4;
	int fragment = 0;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;
		if ((void *)(ip + 1) > data_end || ip->version != 4 || ip->ihl < 5)
			return count(COUNTER_MALFORMED, len, XDP_PASS);
		if ((void *)ip + ip->ihl * 4 > data_end)
			return count(COUNTER_MALFORMED, len, XDP_PASS);
		a.v4 = 1;
		a.src4.addr = ip->saddr;
		a.dst4.addr = ip->daddr;
		a.dst.addr[10] = 0xff;
		a.dst.addr[11] = 0xff;
		__builtin_memcpy(&a.dst.addr[12], &ip->daddr, 4);
		f.proto = ip->protocol;
		f.len = bpf_ntohs(ip->tot_len);
		f.ttl = ip->ttl;
		fragment = (ip->frag_off & bpf_htons(0x1fff)) != 0;
		l4 = (void *)ip + ip->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;
		if ((void *)(ip6 + 1) > data_end || ip6->version != 6)
			return count(COUNTER_MALFORMED, len, XDP_PASS);
		__builtin_memcpy(a.src.addr, &ip6->saddr, 16);
		__builtin_memcpy(a.dst.addr, &ip6->daddr, 16);
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
		__u32 l4off = l4 - data;
		if (f.proto == IPPROTO_TCP) {
			struct tcphdr *th = l4;
			if ((void *)(th + 1) <= data_end) {
				f.sport = bpf_ntohs(th->source);
				f.dport = bpf_ntohs(th->dest);
				f.l4 = ((__u8 *)th)[13];
				f.payload = l4off + th->doff * 4;
			}
		} else if (f.proto == IPPROTO_UDP) {
			struct udphdr *uh = l4;
			if ((void *)(uh + 1) <= data_end) {
				f.sport = bpf_ntohs(uh->source);
				f.dport = bpf_ntohs(uh->dest);
				f.payload = l4off + 8;
			}
		} else if (f.proto == IPPROTO_ICMP || f.proto == 58) {
			__u8 *ic = l4;
			if ((void *)(ic + 2) <= data_end) {
				f.l4 = ICMP_BASE + ((__u32)ic[0] << 8 | ic[1]);
				f.payload = l4off + 8;
			}
		} else {
			f.payload = l4off;
		}
	}

	if (a.v4)
		return decide(ctx, &a, &f, len, 1);
	return decide(ctx, &a, &f, len, 0);
}


// nfhost_tcp is stage 5, reached by tail call from nfhost_dos for TCP
// packets to destinations a tcp_protection rule covers.
SEC("xdp")
int nfhost_tcp(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct tcp_call *tc = bpf_map_lookup_elem(&nfh_tcp_call, &zero);
	if (!tc)
		return XDP_PASS;
	struct finish_in fin = {.o = {.action = XDP_PASS, .reason = COUNTER_PASS, .rule = -1},
				.tenant = tc->tenant, .rate = tc->rate, .len = tc->len};
	struct tcp_in in = {};
	if (tcp_read_in(ctx, &in) == 0) {
		int v = tcp_protect(ctx, &in);
		if (v != TCP_CONTINUE) {
			fin.o.action = v & 0xff;
			fin.o.reason = v >> 8;
		}
	}
	return finish_out(ctx, &fin);
}
