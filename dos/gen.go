// Package dos is nfhost's shared XDP DoS layer on the uplink.
//
// The BPF program (bpf/xdp_dos.c) applies, per packet: allow and deny
// lists on the source (global and tenant-scoped LPM tries, allow wins),
// up to 256 signatures (per-field bitmaps, payload bytes, expiry; drop,
// rate-limit or monitor), per-destination rate limits (GCRA buckets in an
// LRU map), 1-in-N sampling to a ring buffer, and per-reason, per-rule and
// per-tenant counters. Malformed and non-IP packets pass, counted.
//
// Go side: Parse validates a DoS document (config.go) and compiles
// signatures from the shared rule language; Build turns the global and
// tenant documents into map contents purely (state.go); Writer applies the
// difference (writer.go); Reconciler assigns stable tenant indexes and
// reads counters (reconciler.go); Load attaches the program through a
// pinned bpf_link and upgrades it in place (loader.go); SampleReader reads
// samples (sampler.go).
//
// # Who gets the slots
//
// The host's 256 signature slots and 16,384 rate-limit rules are shared by
// nfhost/dos/global and every tenant's document. Build (placement.go)
// decides which version of each document the maps hold:
//
//  1. What is in force keeps its slots: writing one document never takes
//     rules away from another. The version in force is the one the last
//     Build placed (Desired.InForce); after a restart the Reconciler
//     counts a document as in force when the pinned maps hold every rule
//     it would write.
//  2. Documents that need no more than their version in force (unchanged,
//     smaller, or deleted) are placed first; they always fit and free
//     slots for the rest.
//  3. The documents that need more, then new ones, are placed while they
//     fit: the global document first (operator-owned), then tenants by
//     ID.
//  4. A document is placed whole or not at all. One that does not fit is
//     refused with a *PlacementError naming the document and the first
//     field that found no slot, e.g.
//     "tenants/acme/dos: signatures[200]: no free signature slot (256 in
//     use: 1 global, 255 tenant)", and the version it had in force stays.
//     A refused document is tried again on every Build and is placed as
//     soon as slots are free.
//
// A restarted nsd does not know the version in force of a document that
// was refused before the restart (only the current documents are in the
// store); that document competes for the free slots like a new one, and
// if it does not fit its old rules are removed (reported with
// Kept=false).
//
// Placement decides who is in the maps, not the order in them: global
// signatures come first (the lowest index wins a packet), then tenants'.
package dos

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../dos/include -I/usr/include/x86_64-linux-gnu" -target bpfel -type lpm_key -type lpm_key4 -type tenant_key4 -type stats -type bitmap -type sig_meta -type settings -type dst_info -type tenant_key -type rule_stats -type rate_rule -type rate_key -type rate_bucket -type name -type tcp_rule -type tcp_stats -type flow_key -type tcp_dst_key -type tcp_dst_state dosBPF bpf/xdp_dos.c
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../dos/include -I/usr/include/x86_64-linux-gnu" -target bpfel lookupBPF bpf/lookup_only.c
