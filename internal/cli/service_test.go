package cli

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arborsh/arbor/deploy"
	"github.com/arborsh/arbor/internal/daemon"
)

// The unit gives the daemon's drain room: systemd signals only the daemon
// and waits past --shutdown-timeout before it kills.
func TestSystemdUnitLetsTheDrainFinish(t *testing.T) {
	u := deploy.SystemdUnit
	m := regexp.MustCompile(`(?m)^TimeoutStopSec=(\d+)$`).FindStringSubmatch(u)
	if m == nil {
		t.Fatal("arbor.service has no TimeoutStopSec in seconds")
	}
	stop, _ := strconv.Atoi(m[1])
	if time.Duration(stop)*time.Second < daemon.DefaultShutdownTimeout+10*time.Second {
		t.Errorf("TimeoutStopSec=%d leaves no room after the %v shutdown timeout", stop, daemon.DefaultShutdownTimeout)
	}
	for _, want := range []string{"\nKillMode=mixed\n", "\nKillSignal=SIGTERM\n", "\nExecStart=/usr/local/bin/arbor serve\n", "\nWantedBy=multi-user.target\n"} {
		if !strings.Contains(u, want) {
			t.Errorf("arbor.service lacks %q", strings.TrimSpace(want))
		}
	}
}

// arbor install-service --root writes the binary, the unit pointing at it
// and a config file serve accepts, and keeps an edited config file.
func TestInstallService(t *testing.T) {
	root := t.TempDir()
	install := func() {
		t.Helper()
		var out, errb bytes.Buffer
		if code := Main(context.Background(), []string{"install-service", "--root", root, "--binary", "/opt/arbor/arbor", "--no-start"}, nil, &out, &errb); code != 0 {
			t.Fatalf("install-service: exit %d: %s", code, errb.String())
		}
	}
	install()
	if fi, err := os.Stat(filepath.Join(root, "opt/arbor/arbor")); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("binary not installed executable: %v", err)
	}
	unit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/arbor.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "\nExecStart=/opt/arbor/arbor serve\n") {
		t.Errorf("unit does not start the installed binary:\n%s", unit)
	}
	cfg := filepath.Join(root, DefaultConfigFile)
	if _, err := resolveSettings(newServe(&globals{}).LocalFlags(), func(string) string { return "" }, cfg); err != nil {
		t.Errorf("the installed config file is refused: %v", err)
	}
	if err := os.WriteFile(cfg, []byte("slots = 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	install()
	if b, _ := os.ReadFile(cfg); string(b) != "slots = 2\n" {
		t.Errorf("reinstalling replaced the operator's config: %q", b)
	}
	// --json says what it did, and only that, on stdout.
	var out, errb bytes.Buffer
	if code := Main(context.Background(), []string{"--json", "install-service", "--root", root, "--binary", "/opt/arbor/arbor", "--no-start"}, nil, &out, &errb); code != 0 {
		t.Fatalf("install-service --json: exit %d: %s", code, errb.String())
	}
	res := decode[installResult](t, out.String())
	if res.Binary != filepath.Join(root, "opt/arbor/arbor") || res.Unit != filepath.Join(root, "etc/systemd/system/arbor.service") ||
		res.Config != cfg || res.ConfigWritten || res.Started || res.Inits == nil {
		t.Errorf("install-service --json = %+v, want the binary, unit and kept config under %s, not started", res, root)
	}
	// systemd's own parser, where it is installed: it warns (and still
	// exits 0) on any key or value it does not take.
	if sa, err := exec.LookPath("systemd-analyze"); err == nil {
		check := filepath.Join(t.TempDir(), "arbor.service")
		real := strings.Replace(string(unit), "/opt/arbor/arbor", filepath.Join(root, "opt/arbor/arbor"), 1)
		os.WriteFile(check, []byte(real), 0o644)
		out, err := exec.Command(sa, "verify", "--man=no", check).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		}
	}
}

// arbor backup works against a running daemon's home; arbor restore
// refuses while the daemon runs.
func TestBackupCommandAndRestoreRefusal(t *testing.T) {
	d := sharedDaemon(t)
	file := filepath.Join(t.TempDir(), "b.db")
	if r := d.arbor(t, "--home", d.home, "backup", file); r.code != 0 || !strings.Contains(r.stdout, "backed up") {
		t.Fatalf("arbor backup: %s", r)
	}
	if fi, err := os.Stat(file); err != nil || fi.Size() == 0 {
		t.Fatalf("no backup written: %v", err)
	}
	r := d.arbor(t, "--home", d.home, "restore", file)
	if r.code == 0 || !strings.Contains(r.stderr, "is running") || !strings.Contains(r.stderr, "stop it first") {
		t.Fatalf("arbor restore with the daemon running: %s", r)
	}
	// An image where a file belongs is the checkpoint restore, whatever runs.
	r = d.arbor(t, "--home", d.home, "restore", "tag:warm-repl")
	if r.code != 1 || !strings.Contains(r.stderr, "arbor checkpoint restore IMAGE") || strings.Contains(r.stderr, "stop it") {
		t.Errorf("arbor restore tag:warm-repl: %s", r)
	}

	// --json says what each did.
	file2 := filepath.Join(t.TempDir(), "b2.db")
	r = d.arbor(t, "--home", d.home, "--json", "backup", file2)
	if b := decode[backupResult](t, r.stdout); r.code != 0 || b.Backup != file2 || b.Database != filepath.Join(d.home, "arbor.db") {
		t.Errorf("arbor --json backup: %+v\n%s", b, r)
	}
	home := t.TempDir() // no daemon: the restore goes through
	r = d.arbor(t, "--home", home, "--json", "restore", file2)
	if b := decode[backupResult](t, r.stdout); r.code != 0 || b.Backup != file2 || b.Database != filepath.Join(home, "arbor.db") || b.Previous != "" {
		t.Errorf("arbor --json restore: %+v\n%s", b, r)
	}
}
