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
package dos

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../dos/include -I/usr/include/x86_64-linux-gnu" -target bpfel -type lpm_key -type lpm_key4 -type tenant_key4 -type stats -type bitmap -type sig_meta -type settings -type dst_info -type tenant_key -type rule_stats -type rate_rule -type rate_key -type rate_bucket -type name dosBPF bpf/xdp_dos.c
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../dos/include -I/usr/include/x86_64-linux-gnu" -target bpfel lookupBPF bpf/lookup_only.c
