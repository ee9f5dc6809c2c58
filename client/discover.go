package client

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DefaultHome is the daemon's default state directory, where it writes the
// url and token files Discover reads. It mirrors the daemon's default.
const DefaultHome = "/var/lib/arbor"

// Discover returns a client for the local daemon with no configuration:
// the URL comes from $ARBOR_URL or else <home>/url, the token from
// $ARBOR_TOKEN or else <home>/token, where home is $ARBOR_HOME or
// DefaultHome. The daemon writes both files when it starts.
func Discover(opts ...Option) (*Client, error) {
	home := os.Getenv("ARBOR_HOME")
	if home == "" {
		home = DefaultHome
	}
	u := strings.TrimSpace(os.Getenv("ARBOR_URL"))
	if u == "" {
		b, err := readDiscovery(filepath.Join(home, "url"), "ARBOR_URL")
		if err != nil {
			return nil, err
		}
		u = b
	}
	tok := strings.TrimSpace(os.Getenv("ARBOR_TOKEN"))
	if tok == "" {
		b, err := readDiscovery(filepath.Join(home, "token"), "ARBOR_TOKEN")
		if err != nil {
			return nil, err
		}
		tok = b
	}
	return New(u, tok, opts...)
}

// readDiscovery reads one discovery file, explaining how to fix its absence.
func readDiscovery(path, env string) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("%w: %s does not exist and %s is not set: is the daemon running? start it with `arbor serve` (or set ARBOR_HOME to its --home, or %s)", ErrUnreachable, path, env, env)
	case errors.Is(err, fs.ErrPermission):
		return "", fmt.Errorf("cannot read %s: permission denied: run as root (sudo) or set %s", path, env)
	case err != nil:
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s is empty: restart the daemon (`arbor serve`) or set %s", path, env)
	}
	return v, nil
}
