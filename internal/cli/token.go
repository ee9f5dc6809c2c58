package cli

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/arborsh/arbor/client"
	"github.com/arborsh/arbor/client/apitypes"
	"github.com/spf13/cobra"
)

func newToken(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke API tokens",
		Long: `Manage bearer tokens. Everything (images, tags, files, operations) belongs
to the token's account. Tokens of the "default" account (the local token
file's) may manage other accounts with --account.`,
		Example: `  arbor token create --name ci --ttl 30d
  arbor token create --account alice --name laptop
  arbor token list
  arbor token revoke 5b1e2c3d-...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newTokenCreate(g), newTokenList(g), newTokenRevoke(g))
	return cmd
}

func newTokenCreate(g *globals) *cobra.Command {
	var account, name, ttl string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a token",
		Long: `Create a token and print its secret on stdout: the secret is shown only
once, keep it. --ttl makes it expire (30m, 12h, 30d, 1w; default never).
--json prints uuid, account, name, created_at, expires_at and token (the
secret).`,
		Example: `  arbor token create --name ci --ttl 30d
  ARBOR_TOKEN=$(arbor token create --account alice) arbor whoami`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			req := apitypes.TokenCreateRequest{}
			if account != "" {
				req.Account = &account
			}
			if name != "" {
				req.Name = &name
			}
			if ttl != "" {
				s, err := parseSeconds("--ttl", ttl)
				if err != nil {
					return err
				}
				n := int64(s + 0.5)
				req.TTLSeconds = &n
			}
			tok, err := c.CreateToken(ctx, req)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(tok)
			}
			fmt.Fprintln(g.stdout, tok.Secret)
			exp := "never expires"
			if tok.ExpiresAt != nil {
				exp = "expires " + *tok.ExpiresAt
			}
			g.errorf("token %s for account %s (%s): the secret above is shown only once", tok.UUID, tok.Account, exp)
			return nil
		}),
	}
	fl := cmd.Flags()
	fl.StringVar(&account, "account", "", "account the token acts for (default: your own)")
	fl.StringVar(&name, "name", "", "a name to recognise the token by")
	fl.StringVar(&ttl, "ttl", "", "lifetime: 30m, 12h, 30d, 1w (default: no expiry)")
	return cmd
}

func newTokenList(g *globals) *cobra.Command {
	var account string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List tokens",
		Long: `List the tokens of your account (or --account's). Secrets are never listed.
--json prints an array of uuid, account, name, created_at, expires_at,
revoked_at.`,
		Example: `  arbor token list
  arbor token list --account alice --json`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			toks, err := c.ListTokens(ctx, account)
			if err != nil {
				return err
			}
			if toks == nil {
				toks = []apitypes.Token{}
			}
			if g.json {
				return g.printJSON(toks)
			}
			tw := newTable(g.stdout)
			fmt.Fprintln(tw, "TOKEN\tACCOUNT\tNAME\tCREATED\tEXPIRES\tREVOKED")
			for _, t := range toks {
				exp, rev := "never", "-"
				if t.ExpiresAt != nil {
					exp = *t.ExpiresAt
				}
				if t.RevokedAt != nil {
					rev = age(*t.RevokedAt)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.UUID, t.Account, t.Name, age(t.CreatedAt), exp, rev)
			}
			return tw.Flush()
		}),
	}
	cmd.Flags().StringVar(&account, "account", "", "list this account's tokens (default: your own)")
	return cmd
}

func newTokenRevoke(g *globals) *cobra.Command {
	var account string
	cmd := &cobra.Command{
		Use:     "revoke UUID",
		Short:   "Revoke a token",
		Long:    `Revoke a token by its UUID (see arbor token list); it stops working at once.`,
		Example: `  arbor token revoke 5b1e2c3d-0f6a-4e59-9a2b-7c8d9e0f1a2b`,
		Args:    cobra.ExactArgs(1),
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			if err := c.RevokeToken(ctx, args[0], account); err != nil {
				if client.IsNotFound(err) {
					return &cliError{fmt.Sprintf("no token %s in this account (list them with `arbor token list`)", args[0]), err}
				}
				return err
			}
			if g.json {
				return g.printJSON(map[string]any{"uuid": args[0], "revoked": true})
			}
			fmt.Fprintf(g.stdout, "revoked %s\n", args[0])
			return nil
		}),
	}
	cmd.Flags().StringVar(&account, "account", "", "the token's account (default: your own)")
	return cmd
}

// warmLine renders the warm pool's state on one line.
func warmLine(w apitypes.WarmPoolStatus) string {
	if !w.Enabled {
		return "OFF (every run boots a cold sandbox): " + w.Reason
	}
	return fmt.Sprintf("on, %d per new image, at most %d: %d idle, %d booting; %d hits, %d misses",
		w.PerImage, w.Max, w.Idle, w.Booting, w.Hits, w.Misses)
}

func newWhoami(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show the token in use, its account, limits and usage",
		Long: `Show which daemon and account the CLI talks to, the token's permissions and
expiry, the server's limits, the account's operation counts and whether the
daemon's warm sandbox pool is on (and if not, why). Useful to
check that discovery (--url/--token, ARBOR_URL/ARBOR_TOKEN, the local files)
finds what you expect. --json prints the server's answer.`,
		Example: `  arbor whoami
  ARBOR_TOKEN=... arbor whoami --json`,
		Args: cobra.NoArgs,
		RunE: g.withClient(func(ctx context.Context, c *client.Client, args []string) error {
			w, err := c.WhoAmI(ctx)
			if err != nil {
				return err
			}
			if g.json {
				return g.printJSON(w)
			}
			exp := "never"
			if w.TokenExpiration != nil {
				exp = fmt.Sprint(*w.TokenExpiration)
			}
			fmt.Fprintf(g.stdout, "daemon:   %s\naccount:  %s\ntoken:    %s (expires: %s)\n", c.BaseURL(), w.Account, w.TokenUUID, exp)
			var perms []string
			for k, v := range w.Permissions {
				if v {
					perms = append(perms, k)
				}
			}
			sort.Strings(perms)
			fmt.Fprintf(g.stdout, "allowed:  %s\n", strings.Join(perms, ", "))
			printMap := func(title string, m map[string]int64) {
				if len(m) == 0 {
					return
				}
				keys := make([]string, 0, len(m))
				for k := range m {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				parts := make([]string, len(keys))
				for i, k := range keys {
					parts[i] = fmt.Sprintf("%s=%d", k, m[k])
				}
				fmt.Fprintf(g.stdout, "%-9s %s\n", title+":", strings.Join(parts, " "))
			}
			printMap("limits", w.Limits)
			printMap("ops", w.OperationsStat)
			// The daemon's warm pool, if it reports one (arbor extension).
			if st, err := c.Status(ctx); err == nil {
				fmt.Fprintf(g.stdout, "warm:     %s\n", warmLine(st.WarmPool))
			}
			return nil
		}),
	}
}
