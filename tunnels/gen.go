package tunnels

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../dos/include -I/usr/include/x86_64-linux-gnu" -target bpfel -type ep_key -type decap_val -type encap_val -type tun_stats greBPF bpf/gre.c
