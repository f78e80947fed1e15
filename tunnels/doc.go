// Package tunnels is nfhost's anycast GRE datapath and its control.
//
// Every edge server holds the same anycast endpoint. Whichever server
// receives GRE from a tenant's router decapsulates it into the tenant
// namespace, and whichever server routes a packet into a tunnel
// interface encapsulates it towards the router: nothing is held per flow.
//
// The kernels nfhost targets may lack GRE devices, so the datapath is
// eBPF (bpf/gre.c, built by bpf2go): a decap program on tcx ingress of the
// uplink and an encap program on tcx ingress of each tunnel's host-end
// veth, whose peer in the tenant namespace is the tunnel interface (the
// configured name, /31 address and MTU, NOARP). Datapath loads and pins
// them (datapath.go); Reconciler makes the tunnel interfaces, map entries,
// routes and MSS clamping of a tenant match its config (reconciler.go);
// Prober runs the health checks that move routes off failing tunnels
// (health.go). Backend is the seam between them and the tunnel
// interfaces: the eBPF datapath, or KernelBackend (kernelgre.go), kernel
// GRE devices in the tenant namespace whose underlay stays in the host,
// for kernels without tcx or by choice (ChooseBackend, features.go).
package tunnels
