package dos

import "fmt"

// wireTailCalls puts the TCP protection program into the program array
// nfhost_dos tail-calls (index 0). The array is not pinned: every load
// fills its own, so an upgraded nfhost_dos never calls an old nfhost_tcp.
func wireTailCalls(o *dosBPFObjects) error {
	if err := o.NfhProgs.Put(uint32(0), o.NfhostTcp); err != nil {
		return fmt.Errorf("put the TCP protection program into nfh_progs: %w", err)
	}
	return nil
}
