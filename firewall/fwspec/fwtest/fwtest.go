// Package fwtest makes firewall rule sets for tests and benchmarks: the
// same shapes everywhere, so that figures from different benchmarks are
// comparable.
package fwtest

import "fmt"

// Expression is rule i of a mixed rule set: single ports, port sets with
// ranges and a length, addresses of both families, TCP flags with a TTL.
func Expression(i int) string {
	switch i % 4 {
	case 0:
		return fmt.Sprintf("tcp.dstport == %d", 10000+i)
	case 1:
		return fmt.Sprintf("udp.dstport in {%d, %d..%d} and ip.len > 512", 20000+i, 30000+i, 30010+i)
	case 2:
		return fmt.Sprintf("ip.src == 192.0.2.%d or ip.src == 2001:db8:f::%x", i, i)
	}
	return fmt.Sprintf("tcp.flags.syn and not tcp.flags.ack and ip.ttl < %d", 1+i%5)
}
