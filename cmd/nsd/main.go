// Command nsd is the nfhost edge daemon. See `nsd --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nfhost/nfhost/nsd/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(cli.NSD(cli.StdEnv(ctx), os.Args[1:]))
}
