// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// TCP protection, included by xdp_dos.c after the signature stage: SYN
// cookies and out-of-state TCP for the destinations of tcp_protection
// rules (nfh_tcp_dst, looked up only where nfh_dst carries DST_TCP).
//
// A rule counts SYNs per destination address in 100 ms windows. More than
// engage_syns in one window engages it for that address for hold_ns; every
// window with at least release_syns extends that (hysteresis). While
// engaged (mitigate mode):
//   - a SYN is answered here with a SYN-ACK whose sequence number is a
//     kernel SYN cookie (bpf_tcp_raw_gen_syncookie_*), sent back out of
//     the uplink (XDP_TX); the SYN goes no further. The client's MSS is in
//     the cookie; its window scale and SACK-permitted ride in the low bits
//     of our timestamp (the kernel's own encoding, which nftables'
//     synproxy decodes from the ACK's echo) when the client sent
//     timestamps, and are not offered otherwise;
//   - an ACK of no known flow must carry a valid cookie
//     (bpf_tcp_raw_check_syncookie_*): it starts a flow and passes, to
//     the tenant's synproxy which opens the connection to the server;
//     otherwise it is dropped.
// Flows (nfh_flows, an LRU keyed by rule and 4-tuple) start with a SYN
// passed while not engaged, a validated cookie ACK, or an inbound SYN-ACK
// (the answer to a connection the tenant opened through another path:
// traffic is asymmetric). With the rule's out_of_state flag, any other
// TCP packet of no known flow is dropped, engaged or not.

#define TCP_RULES 8192 // one per tenant, at its tenant index
#define TCP_PORT_RANGES 8
#define TCP_WINDOW_NS 100000000ULL // 100 ms

#define TCPP_MITIGATE 1   // drop and answer; else count what would be done
#define TCPP_SYNCOOKIE 2  // SYN-flood protection
#define TCPP_OOS 4        // drop out-of-state TCP
#define TCPP_ALWAYS 8     // cookies at any SYN rate

#define DST_TCP 2 // dst_info.flags: covered by a tcp_protection rule

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10

struct tcp_rule {
	__u32 flags;          // TCPP_*
	__u32 nports;         // port ranges in use; 0: every port
	__u16 port_lo[TCP_PORT_RANGES];
	__u16 port_hi[TCP_PORT_RANGES];
	__u32 engage_syns;    // SYNs in one window to one address that engage
	__u32 release_syns;   // a window with at least this many keeps it engaged
	__u64 hold_ns;        // engaged this long after the last busy window
	__u16 mss;            // MSS our SYN-ACK announces
	__u16 window;         // window our SYN-ACK announces (unscaled)
	__u8 wscale;          // window scale our SYN-ACK announces
	__u8 _pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct tcp_rule);
	__uint(max_entries, TCP_RULES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_tcp_rules SEC(".maps");

// Destination prefix (IPv4 as IPv4-mapped) -> rule index + 1; the longest
// match decides. One family: the stage is a function of its own, verified
// once for both.
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lpm_key);
	__type(value, __u32);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_tcp_dst SEC(".maps");

// What decide hands the stage.
struct tcp_in {
	__u8 src[16], dst[16]; // IPv4 as IPv4-mapped
	__u32 sport, dport, flags;
	__u32 l3off, l4off;
	__u32 v4;
};

struct tcp_dst_key {
	__u32 rule;
	__u8 addr[16];
};

struct tcp_dst_state {
	__u64 win_start;
	__u64 engaged_until; // CLOCK_MONOTONIC (coarse)
	__u32 count;         // SYNs in the current window
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct tcp_dst_key);
	__type(value, struct tcp_dst_state);
	__uint(max_entries, 65536);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_tcp_engage SEC(".maps");

struct flow_key {
	__u32 rule;
	__u16 sport, dport; // network order
	__u8 src[16], dst[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, __u64); // when it started (coarse ns)
	__uint(max_entries, 262144);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_flows SEC(".maps");

// Per rule, per CPU.
struct tcp_stats {
	__u64 syn;            // SYNs to protected destinations
	__u64 cookies_sent;   // answered with a SYN cookie (or would be, monitor)
	__u64 cookies_valid;  // ACKs with a valid cookie: flows started
	__u64 cookies_invalid;// ACKs of no flow without a valid cookie
	__u64 out_of_state;   // packets of no flow (out_of_state rules)
	__u64 flows;          // flows started (SYN passed, cookie, SYN-ACK)
	__u64 dropped;        // packets dropped by the rule
	__u64 syn_unanswerable; // engaged SYNs we cannot answer (IP options): dropped
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct tcp_stats);
	__uint(max_entries, TCP_RULES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nfh_tcp_counters SEC(".maps");

// TCP_CONTINUE: the stage has no verdict; the next stage decides.
#define TCP_CONTINUE -1

static __always_inline int port_protected(struct tcp_rule *r, __u32 port)
{
	if (r->nports == 0)
		return 1;
#pragma unroll
	for (int i = 0; i < TCP_PORT_RANGES; i++) {
		if (i < r->nports && port >= r->port_lo[i] && port <= r->port_hi[i])
			return 1;
	}
	return 0;
}

// tcp_engaged counts a SYN to dst and says whether the rule is engaged
// for it.
static __always_inline int tcp_engaged(struct tcp_rule *r, __u32 rule, __u8 *dst)
{
	if (r->flags & TCPP_ALWAYS)
		return 1;
	struct tcp_dst_key k = {.rule = rule};
	__builtin_memcpy(k.addr, dst, 16);
	__u64 now = bpf_ktime_get_coarse_ns();
	struct tcp_dst_state *s = bpf_map_lookup_elem(&nfh_tcp_engage, &k);
	if (!s) {
		struct tcp_dst_state ns = {.win_start = now, .count = 1};
		if (r->engage_syns == 0)
			ns.engaged_until = now + r->hold_ns;
		bpf_map_update_elem(&nfh_tcp_engage, &k, &ns, BPF_ANY);
		return r->engage_syns == 0;
	}
	if (now - s->win_start >= TCP_WINDOW_NS) {
		// The window that just ended was busy: stay engaged.
		if (now - s->win_start < 2 * TCP_WINDOW_NS && s->count >= r->release_syns && now < s->engaged_until)
			s->engaged_until = now + r->hold_ns;
		s->win_start = now;
		s->count = 0;
	}
	// Unlocked: CPUs racing lose a few counts, which only delays engaging.
	__u32 c = ++s->count;
	if (c > r->engage_syns)
		s->engaged_until = now + r->hold_ns;
	return now < s->engaged_until;
}

// Indexes of struct tcp_stats's fields.
enum { TS_SYN, TS_COOKIE_SENT, TS_COOKIE_VALID, TS_COOKIE_INVALID, TS_OOS, TS_FLOW, TS_DROPPED, TS_UNANSWERABLE };

static __always_inline void tcp_count(__u32 rule, const int field)
{
	__u64 *s = bpf_map_lookup_elem(&nfh_tcp_counters, &rule);
	if (s)
		s[field]++;
}

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u64 s = (__u64)sum;
	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s;
}

// The SYN as read into the stack: IP header and TCP header with options.
struct syn_hdrs {
	union {
		struct iphdr ip4;
		struct ipv6hdr ip6;
	};
	struct tcphdr th;
	// 40 bytes of options, and room for a masked index (see
	// parse_syn_opts) to read past them into zeros.
	__u8 opt[80];
};

// The SYN-ACK we send: a 40-byte TCP header (MSS, SACK-permitted or two
// NOPs, timestamps or ten NOPs, NOP and window scale or four NOPs).
struct synack_opts {
	__u8 mss_kind, mss_len;
	__be16 mss;
	__u8 sack[2];
	__u8 ts_kind, ts_len;
	__be32 tsval, tsecr;
	__u8 nop;
	__u8 ws_kind, ws_len, ws;
};

struct synack4 {
	struct iphdr ip;
	struct tcphdr th;
	struct synack_opts o;
};

struct synack6 {
	struct ipv6hdr ip;
	struct tcphdr th;
	struct synack_opts o;
};

struct pseudo4 {
	__be32 saddr, daddr;
	__u8 zero, proto;
	__be16 len;
};

struct pseudo6 {
	struct in6_addr saddr, daddr;
	__be32 len;
	__u8 zero[3], nh;
};

// Per-CPU scratch for the headers (the program's stack is nearly full).
struct tcp_scratch {
	struct syn_hdrs h;
	union {
		struct synack4 sa4;
		struct synack6 sa6;
	};
	union {
		struct pseudo4 ph4;
		struct pseudo6 ph6;
	};
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__uint(value_size, sizeof(struct tcp_scratch)); // opaque to user space

	__uint(max_entries, 1);
} nfh_tcp_scratch SEC(".maps");

struct syn_opts {
	__u32 tsval;  // network order as received
	__u8 has_ts, has_sack, has_ws, ws;
};

// parse_syn_opts reads the options the client offered (the MSS is the
// cookie helper's business).
// opt_step reads the option at i and returns where the next one starts
// (>= optlen: done). A global function, verified once: the loop in
// parse_syn_opts then sees an unknown index each time round, so the
// verifier prunes its iterations instead of walking every combination of
// options.
__attribute__((noinline)) int opt_step(struct syn_hdrs *h, __u32 i, __u32 optlen, struct syn_opts *o)
{
	if (!h || !o || i >= optlen || optlen > 40)
		return 64;
	i &= 63;
	__u8 kind = h->opt[i];
	if (kind == 0)
		return 64;
	if (kind == 1)
		return i + 1;
	__u8 len = h->opt[i + 1];
	if (len < 2 || i + len > optlen)
		return 64;
	if (kind == 3 && len == 3) {
		o->has_ws = 1;
		o->ws = h->opt[i + 2];
	} else if (kind == 4 && len == 2) {
		o->has_sack = 1;
	} else if (kind == 8 && len == 10) {
		o->has_ts = 1;
		__builtin_memcpy(&o->tsval, &h->opt[i + 2], 4);
	}
	return i + len;
}

static __always_inline void parse_syn_opts(struct syn_hdrs *h, __u32 optlen, struct syn_opts *o)
{
	__u32 i = 0;
#pragma clang loop unroll(disable)
	for (int n = 0; n < 40 && i < optlen; n++)
		i = opt_step(h, i, optlen, o);
}

static __always_inline void fill_synack_opts(struct synack_opts *so, struct syn_opts *o, struct tcp_rule *r, __u16 mss)
{
	so->mss_kind = 2;
	so->mss_len = 4;
	so->mss = bpf_htons(mss < r->mss ? mss : r->mss);
	so->sack[0] = 1;
	so->sack[1] = 1;
	so->ts_kind = 1;
	so->ts_len = 1;
	so->tsval = 0x01010101;
	so->tsecr = 0x01010101;
	so->nop = 1;
	so->ws_kind = 1;
	so->ws_len = 1;
	so->ws = 1;
	if (!o->has_ts)
		return; // without timestamps the cookie carries the MSS only
	// The kernel's timestamp cookie: the low 6 bits of our tsval hold the
	// client's window scale (0xf: none) and SACK-permitted.
	__u32 ts = (__u32)(bpf_ktime_get_ns() / 1000000) & ~0x3fU;
	ts |= o->has_ws ? (o->ws > 14 ? 14 : o->ws) : 0xf;
	if (o->has_sack) {
		ts |= 1 << 4;
		so->sack[0] = 4;
		so->sack[1] = 2;
	}
	so->ts_kind = 8;
	so->ts_len = 10;
	so->tsval = bpf_htonl(ts);
	so->tsecr = o->tsval;
	if (o->has_ws) {
		so->ws_kind = 3;
		so->ws_len = 3;
		so->ws = r->wscale;
	}
}

static __always_inline void fill_synack_tcp(struct tcphdr *out, struct tcphdr *in, __u32 cookie, struct tcp_rule *r)
{
	__builtin_memset(out, 0, sizeof(*out));
	out->source = in->dest;
	out->dest = in->source;
	out->seq = bpf_htonl(cookie);
	out->ack_seq = bpf_htonl(bpf_ntohl(in->seq) + 1);
	out->doff = 10;
	out->syn = 1;
	out->ack = 1;
	out->window = bpf_htons(r->window);
}

// swap_macs turns the frame around; VLAN tags stay.
static __always_inline int swap_macs(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	__u8 tmp[6];
	__builtin_memcpy(tmp, eth->h_source, 6);
	__builtin_memcpy(eth->h_source, eth->h_dest, 6);
	__builtin_memcpy(eth->h_dest, tmp, 6);
	return 0;
}

// resize makes the frame exactly len bytes.
static __always_inline int resize(struct xdp_md *ctx, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	int delta = (int)len - (int)(data_end - data);
	if (delta == 0)
		return 0;
	return bpf_xdp_adjust_tail(ctx, delta);
}

// read_syn copies the L3 and TCP headers (with options) to h; thlen is
// the TCP header's length. -1: not a SYN we can answer.
static __always_inline int read_syn(struct xdp_md *ctx, struct tcp_in *in, struct syn_hdrs *h, __u32 *thlen)
{
	if (in->v4) {
		if (bpf_xdp_load_bytes(ctx, in->l3off, &h->ip4, sizeof(struct iphdr)) < 0)
			return -1;
		if (h->ip4.ihl != 5)
			return -1; // IP options: not answered
	} else if (bpf_xdp_load_bytes(ctx, in->l3off, &h->ip6, sizeof(struct ipv6hdr)) < 0) {
		return -1;
	}
	if (bpf_xdp_load_bytes(ctx, in->l4off, &h->th, sizeof(struct tcphdr)) < 0)
		return -1;
	__u32 n = h->th.doff * 4;
	if (n < sizeof(struct tcphdr) || n > 60)
		return -1;
	*thlen = n;
	__u32 optlen = n - sizeof(struct tcphdr);
	if (optlen > 0 && optlen <= 40) {
		// 1..40 for Linux 6.1's verifier, which does not narrow it from
		// the test above (a no-op: doff*4 keeps it a multiple of 4).
		asm volatile("" : "+r"(optlen));
		optlen = ((optlen - 1) & 63) + 1;
		if (optlen > 40)
			return -1;
		if (bpf_xdp_load_bytes(ctx, in->l4off + sizeof(struct tcphdr), h->opt, optlen) < 0)
			return -1;
	}
	return 0;
}

// syn_cookie answers the SYN with a cookie SYN-ACK. Returns XDP_TX, or
// -1 if the SYN cannot be answered.
static __always_inline int syn_cookie(struct xdp_md *ctx, struct tcp_in *in, struct tcp_rule *r)
{
	__u32 zero = 0;
	struct tcp_scratch *sc = bpf_map_lookup_elem(&nfh_tcp_scratch, &zero);
	if (!sc)
		return -1;
	struct syn_hdrs *h = &sc->h;
	__builtin_memset(h->opt, 0, sizeof(h->opt));
	__u32 thlen = 0;
	if (read_syn(ctx, in, h, &thlen) < 0)
		return -1;
	if (thlen < sizeof(struct tcphdr) || thlen > 60)
		return -1;
	__s64 c = in->v4 ? bpf_tcp_raw_gen_syncookie_ipv4(&h->ip4, &h->th, thlen)
			 : bpf_tcp_raw_gen_syncookie_ipv6(&h->ip6, &h->th, thlen);
	if (c < 0)
		return -1;
	__u32 cookie = (__u32)c;
	__u16 mss = (__u16)(c >> 32);
	struct syn_opts o = {};
	parse_syn_opts(h, thlen - sizeof(struct tcphdr), &o);

	if (swap_macs(ctx) < 0)
		return -1;
	if (in->v4) {
		struct synack4 *sa = &sc->sa4;
		__builtin_memset(sa, 0, sizeof(*sa));
		sa->ip.version = 4;
		sa->ip.ihl = 5;
		sa->ip.tot_len = bpf_htons(sizeof(*sa));
		sa->ip.frag_off = bpf_htons(0x4000); // DF
		sa->ip.ttl = 64;
		sa->ip.protocol = IPPROTO_TCP;
		sa->ip.saddr = h->ip4.daddr;
		sa->ip.daddr = h->ip4.saddr;
		sa->ip.check = csum_fold(bpf_csum_diff(0, 0, (__be32 *)&sa->ip, sizeof(sa->ip), 0));
		fill_synack_tcp(&sa->th, &h->th, cookie, r);
		fill_synack_opts(&sa->o, &o, r, mss);
		struct pseudo4 *ph = &sc->ph4;
		ph->saddr = sa->ip.saddr;
		ph->daddr = sa->ip.daddr;
		ph->zero = 0;
		ph->proto = IPPROTO_TCP;
		ph->len = bpf_htons(sizeof(sa->th) + sizeof(sa->o));
		__s64 s = bpf_csum_diff(0, 0, (__be32 *)ph, sizeof(*ph), 0);
		s = bpf_csum_diff(0, 0, (__be32 *)&sa->th, sizeof(sa->th) + sizeof(sa->o), s);
		sa->th.check = csum_fold(s);
		if (resize(ctx, in->l3off + sizeof(*sa)) < 0)
			return -1;
		if (bpf_xdp_store_bytes(ctx, in->l3off, sa, sizeof(*sa)) < 0)
			return -1;
	} else {
		struct synack6 *sa = &sc->sa6;
		__builtin_memset(sa, 0, sizeof(*sa));
		sa->ip.version = 6;
		sa->ip.payload_len = bpf_htons(sizeof(sa->th) + sizeof(sa->o));
		sa->ip.nexthdr = IPPROTO_TCP;
		sa->ip.hop_limit = 64;
		sa->ip.saddr = h->ip6.daddr;
		sa->ip.daddr = h->ip6.saddr;
		fill_synack_tcp(&sa->th, &h->th, cookie, r);
		fill_synack_opts(&sa->o, &o, r, mss);
		struct pseudo6 *ph = &sc->ph6;
		__builtin_memset(ph, 0, sizeof(*ph));
		ph->saddr = sa->ip.saddr;
		ph->daddr = sa->ip.daddr;
		ph->nh = IPPROTO_TCP;
		ph->len = bpf_htonl(sizeof(sa->th) + sizeof(sa->o));
		__s64 s = bpf_csum_diff(0, 0, (__be32 *)ph, sizeof(*ph), 0);
		s = bpf_csum_diff(0, 0, (__be32 *)&sa->th, sizeof(sa->th) + sizeof(sa->o), s);
		sa->th.check = csum_fold(s);
		if (resize(ctx, in->l3off + sizeof(*sa)) < 0)
			return -1;
		if (bpf_xdp_store_bytes(ctx, in->l3off, sa, sizeof(*sa)) < 0)
			return -1;
	}
	return XDP_TX;
}

// cookie_valid checks an ACK's cookie: 1 valid, 0 not.
static __always_inline int cookie_valid(struct xdp_md *ctx, struct tcp_in *in)
{
	__u32 zero = 0;
	struct tcp_scratch *sc = bpf_map_lookup_elem(&nfh_tcp_scratch, &zero);
	if (!sc)
		return 0;
	struct syn_hdrs *h = &sc->h;
	if (bpf_xdp_load_bytes(ctx, in->l4off, &h->th, sizeof(struct tcphdr)) < 0)
		return 0;
	if (in->v4) {
		if (bpf_xdp_load_bytes(ctx, in->l3off, &h->ip4, sizeof(struct iphdr)) < 0)
			return 0;
		return bpf_tcp_raw_check_syncookie_ipv4(&h->ip4, &h->th) == 0;
	}
	if (bpf_xdp_load_bytes(ctx, in->l3off, &h->ip6, sizeof(struct ipv6hdr)) < 0)
		return 0;
	return bpf_tcp_raw_check_syncookie_ipv6(&h->ip6, &h->th) == 0;
}

// tcp_read_in parses the packet again (Ethernet, up to two VLAN tags,
// IPv4 or IPv6, TCP) into in. -1: not a TCP packet with its header (a
// fragment, an IPv6 extension header, truncated).
static __always_inline int tcp_read_in(struct xdp_md *ctx, struct tcp_in *in)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end)
		return -1;
	__u16 proto = eth->h_proto;
	__u32 off = sizeof(*eth);
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		struct vlan_hdr *vh = data + off;
		if ((void *)(vh + 1) > data_end)
			return -1;
		proto = vh->h_vlan_encapsulated_proto;
		off += sizeof(*vh);
	}
	in->l3off = off;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_xdp_load_bytes(ctx, off, &ip, sizeof(ip)) < 0 || ip.protocol != IPPROTO_TCP ||
		    ip.ihl < 5 || (ip.frag_off & bpf_htons(0x1fff)))
			return -1;
		in->v4 = 1;
		in->l4off = off + ip.ihl * 4;
		__builtin_memset(in->src, 0, 16);
		__builtin_memset(in->dst, 0, 16);
		in->src[10] = in->src[11] = in->dst[10] = in->dst[11] = 0xff;
		__builtin_memcpy(&in->src[12], &ip.saddr, 4);
		__builtin_memcpy(&in->dst[12], &ip.daddr, 4);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (bpf_xdp_load_bytes(ctx, off, &ip6, sizeof(ip6)) < 0 || ip6.nexthdr != IPPROTO_TCP)
			return -1;
		in->v4 = 0;
		in->l4off = off + sizeof(ip6);
		__builtin_memcpy(in->src, &ip6.saddr, 16);
		__builtin_memcpy(in->dst, &ip6.daddr, 16);
	} else {
		return -1;
	}
	struct tcphdr th;
	if (bpf_xdp_load_bytes(ctx, in->l4off, &th, sizeof(th)) < 0)
		return -1;
	in->sport = bpf_ntohs(th.source);
	in->dport = bpf_ntohs(th.dest);
	in->flags = ((__u8 *)&th)[13];
	return 0;
}

#define TCP_VERDICT(act, reason) ((act) | ((reason) << 8))

// tcp_protect runs a TCP packet to a DST_TCP destination through its
// rule. It returns TCP_VERDICT(XDP action, enum counter reason), or
// TCP_CONTINUE. A global function: verified once, on its own stack.
__attribute__((noinline)) int tcp_protect(struct xdp_md *ctx, struct tcp_in *in)
{
	if (!in)
		return TCP_CONTINUE;
	struct lpm_key dk = {.prefixlen = 128};
	__builtin_memcpy(dk.addr, in->dst, 16);
	__u32 *ri = bpf_map_lookup_elem(&nfh_tcp_dst, &dk);
	if (!ri || *ri == 0)
		return TCP_CONTINUE;
	__u32 rule = *ri - 1;
	struct tcp_rule *r = bpf_map_lookup_elem(&nfh_tcp_rules, &rule);
	if (!r || !port_protected(r, in->dport))
		return TCP_CONTINUE;
	int mitigate = r->flags & TCPP_MITIGATE;
	__u32 flags = in->flags;
	struct flow_key fk = {.rule = rule, .sport = bpf_htons(in->sport), .dport = bpf_htons(in->dport)};
	__builtin_memcpy(fk.src, in->src, 16);
	__builtin_memcpy(fk.dst, in->dst, 16);
	__u64 now = bpf_ktime_get_coarse_ns();

	if ((flags & (TH_SYN | TH_ACK | TH_RST)) == TH_SYN) {
		tcp_count(rule, TS_SYN);
		if (!(r->flags & TCPP_SYNCOOKIE) || !tcp_engaged(r, rule, in->dst)) {
			bpf_map_update_elem(&nfh_flows, &fk, &now, BPF_ANY);
			tcp_count(rule, TS_FLOW);
			return TCP_CONTINUE;
		}
		tcp_count(rule, TS_COOKIE_SENT);
		if (!mitigate) {
			bpf_map_update_elem(&nfh_flows, &fk, &now, BPF_ANY);
			return TCP_VERDICT(XDP_PASS, COUNTER_MONITOR);
		}
		if (syn_cookie(ctx, in, r) == XDP_TX)
			return TCP_VERDICT(XDP_TX, COUNTER_SYN_COOKIE);
		tcp_count(rule, TS_UNANSWERABLE);
		tcp_count(rule, TS_DROPPED);
		return TCP_VERDICT(XDP_DROP, COUNTER_SYN_DROP);
	}
	if ((flags & (TH_SYN | TH_ACK)) == (TH_SYN | TH_ACK)) {
		// The answer to a SYN the tenant sent: the flow starts here.
		if (!bpf_map_lookup_elem(&nfh_flows, &fk)) {
			bpf_map_update_elem(&nfh_flows, &fk, &now, BPF_ANY);
			tcp_count(rule, TS_FLOW);
		}
		return TCP_CONTINUE;
	}
	if (bpf_map_lookup_elem(&nfh_flows, &fk)) {
		if (flags & TH_RST)
			bpf_map_delete_elem(&nfh_flows, &fk);
		return TCP_CONTINUE;
	}
	// No flow. An ACK may be the last step of a cookie handshake.
	if ((flags & (TH_SYN | TH_ACK | TH_RST | TH_FIN)) == TH_ACK && (r->flags & TCPP_SYNCOOKIE)) {
		if (cookie_valid(ctx, in)) {
			bpf_map_update_elem(&nfh_flows, &fk, &now, BPF_ANY);
			tcp_count(rule, TS_COOKIE_VALID);
			tcp_count(rule, TS_FLOW);
			return TCP_CONTINUE;
		}
		// Only while engaged (or with out_of_state) is an ACK nobody
		// placed dropped: a connection that started before the rule
		// existed must survive a quiet rule.
		struct tcp_dst_key k = {.rule = rule};
		__builtin_memcpy(k.addr, in->dst, 16);
		struct tcp_dst_state *s = bpf_map_lookup_elem(&nfh_tcp_engage, &k);
		int engaged = (r->flags & TCPP_ALWAYS) || (s && now < s->engaged_until);
		if (engaged || (r->flags & TCPP_OOS)) {
			tcp_count(rule, TS_COOKIE_INVALID);
			if (!mitigate)
				return TCP_VERDICT(XDP_PASS, COUNTER_MONITOR);
			tcp_count(rule, TS_DROPPED);
			return TCP_VERDICT(XDP_DROP, COUNTER_COOKIE_INVALID);
		}
	}
	if (r->flags & TCPP_OOS) {
		tcp_count(rule, TS_OOS);
		if (!mitigate)
			return TCP_VERDICT(XDP_PASS, COUNTER_MONITOR);
		tcp_count(rule, TS_DROPPED);
		return TCP_VERDICT(XDP_DROP, COUNTER_OUT_OF_STATE);
	}
	return TCP_CONTINUE;
}
