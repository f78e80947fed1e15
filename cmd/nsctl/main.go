// Command nsctl is the nfhost admin and tenant CLI. See `nsctl --help`.
//
// It only talks to the configuration store (Consul KV or a directory) and
// links no kernel code; internal/layering checks that.
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
	os.Exit(nsctl(cliutil.StdEnv(ctx), os.Args[1:]))
}
