package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/arborsh/arbor/deploy"
	"github.com/arborsh/arbor/internal/initproc"
	"github.com/spf13/cobra"
)

// exampleConfig is written to /etc/arbor/arbor.toml when there is none.
const exampleConfig = `# arbor serve settings. Keys are the flags of arbor serve; a flag or an
# ARBOR_<NAME> variable overrides a key. Show what is in force with
#   arbor serve --print-config
#
# listen = "127.0.0.1:7777"
# home = "/var/lib/arbor"
# runtime = "runsc"
# allow-runtime = ["runc"]
# shutdown-timeout = "60s"   # keep below TimeoutStopSec in arbor.service
# rate-limit = 50            # API requests per second per token (0: unlimited)
`

// installResult is install-service's --json output.
type installResult struct {
	Binary        string   `json:"binary"`
	Inits         []string `json:"inits"` // the sandboxes' init binaries installed beside it
	Unit          string   `json:"unit"`
	Config        string   `json:"config"`
	ConfigWritten bool     `json:"config_written"` // false: an existing one was kept
	Started       bool     `json:"started"`
}

func newInstallService(g *globals) *cobra.Command {
	var root, binary string
	var noStart bool
	cmd := &cobra.Command{
		Use:   "install-service",
		Short: "Install arbor as a systemd service",
		Long: `Install this arbor binary as ` + "`arbor serve`" + ` under systemd: copy it to
--binary, write /etc/systemd/system/arbor.service (deploy/arbor.service with
ExecStart pointing at --binary), write /etc/arbor/arbor.toml if there is none,
then systemctl daemon-reload and enable --now arbor (unless --no-start).
Running it again upgrades the binary and the unit; the config file is kept.

--json prints {"binary", "inits", "unit", "config", "config_written",
"started"}: the files installed, the config file and whether this run wrote
it, and whether systemd started the service.`,
		Example: `  sudo bin/arbor install-service
  sudo arbor install-service --no-start && sudo systemctl start arbor`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res := installResult{Inits: []string{}}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			if !filepath.IsAbs(binary) {
				return fmt.Errorf("--binary %q: give an absolute path", binary)
			}
			dst := filepath.Join(root, binary)
			if err := installFile(self, dst, 0o755); err != nil {
				return err
			}
			res.Binary = dst
			// The sandboxes' inits, if built beside this binary (scripts/setup.sh
			// does): the daemon prefers arbor-init to serving as its own init,
			// and cold batch runs start arbor-init-c.
			for _, name := range []string{"arbor-init", initproc.ColdInitName} {
				if init := filepath.Join(filepath.Dir(self), name); initproc.IsStatic(init) {
					p := filepath.Join(filepath.Dir(dst), name)
					if err := installFile(init, p, 0o755); err != nil {
						return err
					}
					res.Inits = append(res.Inits, p)
				}
			}
			unit := strings.Replace(deploy.SystemdUnit, "ExecStart=/usr/local/bin/arbor serve", "ExecStart="+binary+" serve", 1)
			unitPath := filepath.Join(root, "etc/systemd/system/arbor.service")
			if err := writeFileAtomic(unitPath, []byte(unit), 0o644); err != nil {
				return err
			}
			res.Unit = unitPath
			say := func(format string, a ...any) {
				if !g.json {
					fmt.Fprintf(g.stdout, format, a...)
				}
			}
			say("installed %s and %s\n", dst, unitPath)
			res.Config = filepath.Join(root, DefaultConfigFile)
			if _, err := os.Stat(res.Config); os.IsNotExist(err) {
				if err := writeFileAtomic(res.Config, []byte(exampleConfig), 0o644); err != nil {
					return err
				}
				res.ConfigWritten = true
				say("wrote %s (all defaults; edit it, then sudo systemctl restart arbor)\n", res.Config)
			}
			if noStart {
				if g.json {
					return g.printJSON(res)
				}
				fmt.Fprintln(g.stdout, "start it with: sudo systemctl daemon-reload && sudo systemctl enable --now arbor")
				return nil
			}
			for _, a := range [][]string{{"daemon-reload"}, {"enable", "--now", "arbor"}} {
				out, err := exec.CommandContext(cmd.Context(), "systemctl", a...).CombinedOutput()
				if err != nil {
					return fmt.Errorf("systemctl %s: %v: %s (is systemd running? the files are installed; start arbor yourself or pass --no-start)", strings.Join(a, " "), err, strings.TrimSpace(string(out)))
				}
			}
			res.Started = true
			if g.json {
				return g.printJSON(res)
			}
			fmt.Fprintln(g.stdout, "arbor is running: systemctl status arbor; logs: journalctl -u arbor")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&root, "root", "/", "install under this directory instead of / (for images and tests)")
	f.StringVar(&binary, "binary", "/usr/local/bin/arbor", "where the service's arbor binary goes")
	f.BoolVar(&noStart, "no-start", false, "install the files only: do not run systemctl")
	return cmd
}

// installFile copies src to dst (through a temporary file and a rename, so
// a running binary is replaced, not overwritten), unless they are the same.
func installFile(src, dst string, mode os.FileMode) error {
	if a, err := filepath.EvalSymlinks(src); err == nil {
		if b, err := filepath.EvalSymlinks(dst); err == nil && a == b {
			return nil
		}
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return writeFileAtomic(dst, b, mode)
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return err
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
