package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/arborsh/arbor/client"
	"github.com/spf13/cobra"
)

// clientCommands returns every command that talks to a daemon through the
// Go client, in the order help lists them.
func clientCommands(g *globals) []*cobra.Command {
	return []*cobra.Command{
		newRun(g), newBranch(g),
		newImages(g), newImport(g), newTag(g), newRmi(g),
		newLs(g), newCat(g), newCp(g), newGrep(g), newDiff(g), newLog(g),
		newPs(g), newWait(g), newCancel(g), newLogs(g), newInput(g), newFork(g), newCheckpoint(g),
		newToken(g), newWhoami(g), newStatus(g), newDF(g), newGC(g),
		newExpose(g), // port previews (expose.go)
	}
}

// action is the body of a command that needs a client.
type action func(ctx context.Context, c *client.Client, args []string) error

// withClient connects to the daemon, runs fn, and turns its error into one
// that says what to do next.
func (g *globals) withClient(fn action) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		c, err := g.connect()
		if err != nil {
			return err
		}
		return g.explain(fn(cmd.Context(), c, args), c)
	}
}

// connect returns a client for the daemon the flags and environment name:
// --url, then $ARBOR_URL, then <home>/url; --token, then $ARBOR_TOKEN, then
// <home>/token; home is --home, then $ARBOR_HOME, then /var/lib/arbor. With
// none of the flags set this is exactly [client.Discover].
func (g *globals) connect() (*client.Client, error) {
	opts := []client.Option{client.WithUserAgent("arbor-cli")}
	home := g.home
	if home == "" {
		home = envOr("ARBOR_HOME", client.DefaultHome)
	}
	if g.url == "" && g.token == "" && g.home == "" {
		c, err := client.Discover(opts...)
		if errors.Is(err, client.ErrUnreachable) {
			return nil, noDaemonError(home)
		}
		return c, err
	}
	u := g.url
	if u == "" {
		u = os.Getenv("ARBOR_URL")
	}
	if u == "" {
		var err error
		if u, err = readHomeFile(home, "url"); errors.Is(err, fs.ErrNotExist) {
			return nil, noDaemonError(home)
		} else if err != nil {
			return nil, err
		}
	}
	tok := g.token
	if tok == "" {
		tok = os.Getenv("ARBOR_TOKEN")
	}
	if tok == "" {
		var err error
		if tok, err = readHomeFile(home, "token"); errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no token: %s does not exist: pass --token or set ARBOR_TOKEN (create one with `sudo arbor token create`)", filepath.Join(home, "token"))
		} else if err != nil {
			return nil, err
		}
	}
	return client.New(u, tok, opts...)
}

// readHomeFile reads one of the daemon's discovery files.
func readHomeFile(home, name string) (string, error) {
	p := filepath.Join(home, name)
	b, err := os.ReadFile(p)
	switch {
	case errors.Is(err, fs.ErrPermission):
		return "", fmt.Errorf("cannot read %s: permission denied: run with sudo, or pass --%s (or set ARBOR_%s)", p, name, strings.ToUpper(name))
	case err != nil:
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s is empty: restart the daemon (`sudo arbor serve`) or pass --%s", p, name)
	}
	return v, nil
}

func noDaemonError(home string) error {
	return fmt.Errorf("cannot find the arbor daemon: %s does not exist: is it running? start it with `sudo arbor serve` "+
		"(or pass --url / set ARBOR_URL, or point --home / ARBOR_HOME at its home)", filepath.Join(home, "url"))
}

// cliError is an error message meant for people, wrapping its cause.
type cliError struct {
	msg string
	err error
}

func (e *cliError) Error() string { return e.msg }
func (e *cliError) Unwrap() error { return e.err }

// explain rewrites errors from the client into messages that name the fix,
// and an interrupted command into exit status 130.
func (g *globals) explain(err error, c *client.Client) error {
	var ee exitError
	var ce *cliError
	var apiErr *client.Error
	switch {
	case err == nil, errors.As(err, &ee), errors.As(err, &ce):
		return err
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(g.stderr, "arbor: interrupted")
		return exitError{130}
	case errors.Is(err, client.ErrUnreachable):
		return &cliError{fmt.Sprintf("cannot reach the arbor daemon at %s: is it running? start it with `sudo arbor serve` (or point --url / ARBOR_URL at it)", c.BaseURL()), err}
	case client.IsUnauthorized(err):
		return &cliError{"the daemon rejected the token (HTTP 401): pass a valid --token or ARBOR_TOKEN, or use the local token file (--home); create tokens with `arbor token create`", err}
	case errors.As(err, &apiErr):
		msg := apiErr.Message
		switch {
		case apiErr.Status == 403:
			msg += " (HTTP 403: this token may not do that; use a token of the right account)"
		case apiErr.Status >= 500:
			msg += fmt.Sprintf(" (HTTP %d; request %s: see the daemon log)", apiErr.Status, apiErr.RequestID)
		}
		// Keep the context callers wrapped around the client's error.
		return &cliError{strings.Replace(err.Error(), apiErr.Error(), msg, 1), err}
	}
	return err
}

// printJSON writes v as indented JSON to stdout.
func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// errorf prints a message prefixed "arbor: " to stderr.
func (g *globals) errorf(format string, args ...any) {
	fmt.Fprintf(g.stderr, "arbor: "+format+"\n", args...)
}
