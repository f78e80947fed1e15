// Command nsd is the nfhost edge daemon. See `nsd --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/nfhost/nfhost/internal/cliutil"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(run(cliutil.StdEnv(ctx), os.Args[1:]))
}
