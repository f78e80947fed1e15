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

The Consul token comes from --token, --token-file, CONSUL_HTTP_TOKEN or
CONSUL_HTTP_TOKEN_FILE; TLS from CONSUL_HTTP_SSL, CONSUL_CACERT, CONSUL_CLIENT_CERT,
CONSUL_CLIENT_KEY and CONSUL_TLS_SERVER_NAME (or an https:// address).

Exit codes: 0 ok, 1 failure, 2 usage, 3 invalid config, 4 check-and-set conflict
(read again and retry), 5 not found, 6 refused by Consul's ACLs (the message names
the key and the policy that would allow it).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	c.addStoreFlags(root)
	root.AddCommand(tenantCommand(c), validateCommand(c), statusCommand(c), confirmDeletesCommand(c),
		fwCommand(c), dosCommand(c), tunnelsCommand(c), aclCommand(c), bgpCommand(c), drainCommand(c, true), drainCommand(c, false))
	return root
}
