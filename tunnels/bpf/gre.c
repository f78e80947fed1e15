// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// nfhost's GRE datapath for kernels without GRE devices (and a faster one
// for kernels with them). Two tcx programs, no per-flow state:
//
//   nfhost_gre_decap, tcx ingress of the uplink: IPv4 protocol 47 to a
//     local endpoint with a plain 4-byte GRE header (no checksum, key or
//     sequence number, version 0) carrying IPv4 or IPv6; the tunnel is
//     found by (local, remote) endpoint; the outer 24 bytes are removed,
//     the Ethernet header is rewritten for the tunnel interface and the
//     packet is redirected into the tenant namespace (bpf_redirect_peer on
//     the tunnel's host-end veth). Anything else goes on untouched.
//   nfhost_gre_encap, tcx ingress of each tunnel's host-end veth: what the
//     tenant namespace routed into the tunnel interface gets an outer IPv4
//     header (local endpoint -> remote endpoint, the tunnel's TTL) and a
//     GRE header, and leaves through the uplink (bpf_redirect_neigh: the
//     host's FIB and neighbour table pick the next hop).
//
// The same programs serve the customer-side endpoint of the tests: only
// the roles of "local" and "remote" differ.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_GRE_ 47
#define GRE_HLEN 4
#define ENCAP_HLEN (sizeof(struct iphdr) + GRE_HLEN)

#define TCX_NEXT_ -1
#define TCX_DROP_ 2

char __license[] SEC("license") = "Dual BSD/GPL";

struct ep_key {
	__be32 local;
	__be32 remote;
};

struct decap_val {
	__u32 ifindex; // host end of the tunnel veth (its peer is in the tenant namespace)
	__u32 id;      // counter index
	__u8 dmac[6];  // tunnel interface (tenant end)
	__u8 smac[6];  // host end
};

struct encap_val {
	__be32 local;
	__be32 remote;
	__u32 uplink; // ifindex the encapsulated packet leaves by
	__u32 id;
	__u8 ttl;
	__u8 pad[3];
};

struct tun_stats {
	__u64 rx_packets; // decapsulated into the tunnel interface
	__u64 rx_bytes;   // inner bytes
	__u64 tx_packets; // encapsulated towards the remote endpoint
	__u64 tx_bytes;   // inner bytes
	__u64 drops;      // failed to decapsulate or encapsulate
};

#define MAX_TUNNELS 65536

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_TUNNELS);
	__type(key, struct ep_key);
	__type(value, struct decap_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nft_decap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_TUNNELS);
	__type(key, __u32);
	__type(value, struct encap_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nft_encap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_TUNNELS);
	__type(key, __u32);
	__type(value, struct tun_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} nft_tun_stats SEC(".maps");

struct gre_base {
	__be16 flags;
	__be16 proto;
};

static __always_inline struct tun_stats *stats(__u32 id)
{
	return bpf_map_lookup_elem(&nft_tun_stats, &id);
}

SEC("tc")
int nfhost_gre_decap(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TCX_NEXT_;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return TCX_NEXT_;
	// Options, fragments and anything but GRE: not ours.
	if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_GRE_ ||
	    (ip->frag_off & bpf_htons(0x3fff)))
		return TCX_NEXT_;
	struct gre_base *gre = (void *)(ip + 1);
	if ((void *)(gre + 1) > end || gre->flags != 0)
		return TCX_NEXT_;
	__be16 proto = gre->proto;
	__u64 flags = BPF_F_ADJ_ROOM_FIXED_GSO;
	if (proto == bpf_htons(ETH_P_IP))
		flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV4;
	else if (proto == bpf_htons(ETH_P_IPV6))
		flags |= BPF_F_ADJ_ROOM_DECAP_L3_IPV6;
	else
		return TCX_NEXT_;
	struct ep_key k = {.local = ip->daddr, .remote = ip->saddr};
	struct decap_val *v = bpf_map_lookup_elem(&nft_decap, &k);
	if (!v)
		return TCX_NEXT_;
	struct tun_stats *st = stats(v->id);
	__u32 inner = skb->len - sizeof(*eth) - ENCAP_HLEN;
	int peer = 1;
	if (bpf_skb_adjust_room(skb, -(int)ENCAP_HLEN, BPF_ADJ_ROOM_MAC, flags)) {
		// Linux before 6.3 has no BPF_F_ADJ_ROOM_DECAP_L3_* flags (and
		// refuses the call before changing anything): decapsulate
		// without them. skb->protocol then stays the outer IPv4, right
		// for IPv4 inside; an IPv6 packet goes out of the host end
		// instead of straight to the peer, so that the veth's receive
		// side takes the protocol from the Ethernet header.
		if (bpf_skb_adjust_room(skb, -(int)ENCAP_HLEN, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO)) {
			if (st)
				st->drops++;
			return TCX_DROP_;
		}
		peer = proto == bpf_htons(ETH_P_IP);
	}
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return TCX_DROP_;
	__builtin_memcpy(eth->h_dest, v->dmac, 6);
	__builtin_memcpy(eth->h_source, v->smac, 6);
	eth->h_proto = proto;
	if (st) {
		st->rx_packets++;
		st->rx_bytes += inner;
	}
	if (!peer)
		return bpf_redirect(v->ifindex, 0);
	return bpf_redirect_peer(v->ifindex, 0);
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

SEC("tc")
int nfhost_gre_encap(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct encap_val *v = bpf_map_lookup_elem(&nft_encap, &ifindex);
	if (!v)
		return TCX_NEXT_;
	struct tun_stats *st = stats(v->id);
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		goto drop;
	__be16 proto = eth->h_proto;
	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6))
		goto drop; // the tunnel interface is NOARP: nothing else belongs here
	__u32 inner = skb->len - sizeof(*eth);
	if (bpf_skb_adjust_room(skb, ENCAP_HLEN, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 | BPF_F_ADJ_ROOM_ENCAP_L4_GRE))
		goto drop;
	data = (void *)(long)skb->data;
	end = (void *)(long)skb->data_end;
	eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct gre_base *gre = (void *)(ip + 1);
	if ((void *)(gre + 1) > end)
		goto drop;
	eth->h_proto = bpf_htons(ETH_P_IP);
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(inner + ENCAP_HLEN);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = v->ttl;
	ip->protocol = IPPROTO_GRE_;
	ip->check = 0;
	ip->saddr = v->local;
	ip->daddr = v->remote;
	__u32 sum = 0;
	__u16 *w = (__u16 *)ip;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	ip->check = csum_fold(sum);
	gre->flags = 0;
	gre->proto = proto;
	if (st) {
		st->tx_packets++;
		st->tx_bytes += inner;
	}
	return bpf_redirect_neigh(v->uplink, NULL, 0, 0);
drop:
	if (st)
		st->drops++;
	return TCX_DROP_;
}
