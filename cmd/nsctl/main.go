// Command nsctl is the nfhost admin and tenant CLI. See `nsctl --help`.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/nfhost/nfhost/nsd/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(cli.Nsctl(cli.StdEnv(ctx), os.Args[1:]))
}
