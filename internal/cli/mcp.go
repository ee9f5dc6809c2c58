package cli

import (
	"github.com/arborsh/arbor/internal/mcp"
	"github.com/spf13/cobra"
)

func newMCP(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "mcp",
		Short: "Serve arbor's tools to an MCP client over stdio",
		Long: `Serve arbor as an MCP server on stdin/stdout, talking to the local daemon
(found like every other command: --url/--token, ARBOR_URL/ARBOR_TOKEN, or the
daemon's url and token files). The daemon also serves MCP over streamable HTTP
at /mcp with the same bearer tokens.`,
		Example: `  claude mcp add arbor -- sudo arbor mcp`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.connect()
			if err != nil {
				return err
			}
			return mcp.ServeIO(cmd.Context(), c, g.stdin, g.stdout)
		},
	}
}
