// Command nfcustomer is the customer-router side of nfhost's GRE tunnels
// for labs on kernels without GRE. See `nfcustomer --help`.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/nfhost/nfhost/internal/cliutil"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(nfcustomer(cliutil.StdEnv(ctx), os.Args[1:]))
}
