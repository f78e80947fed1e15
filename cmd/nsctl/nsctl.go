package main

import (
	"github.com/spf13/cobra"

	"github.com/nfhost/nfhost/internal/cliutil"
)

// nsctl runs the admin and tenant CLI with args (without the program name)
// and returns the process exit code.
func nsctl(env cliutil.Env, args []string) int {
	return cliutil.Execute(env, rootCommand(&ctl{Env: env}), args)
}

// rootCommand is nsctl's command tree; its commands run with c.
func rootCommand(c *ctl) *cobra.Command {
	root := &cobra.Command{
		Use:   "nsctl",
		Short: "nfhost admin and tenant CLI",
		Long: `nsctl edits tenant configs in Consul KV (or the directory source) and shows what
each edge server has applied.

Exit codes: 0 ok, 1 failure, 2 usage, 3 invalid config, 4 check-and-set conflict
(read again and retry), 5 not found.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	c.addStoreFlags(root)
	root.AddCommand(tenantCommand(c), validateCommand(c), statusCommand(c), confirmDeletesCommand(c),
		fwCommand(c), dosCommand(c), tunnelsCommand(c))
	return root
}
