package dos

import "fmt"

// wireTailCalls puts the TCP protection program into the program array
// nfhost_dos tail-calls (index 0). The array is pinned (the kernel clears a
// program array whose last user-space reference goes away, which would
// switch TCP protection off when nsd exits); every load replaces the
// entry with its own nfhost_tcp, atomically.
func wireTailCalls(o *dosBPFObjects) error {
	if err := o.NfhProgs.Put(uint32(0), o.NfhostTcp); err != nil {
		return fmt.Errorf("put the TCP protection program into nfh_progs: %w", err)
	}
	return nil
}
