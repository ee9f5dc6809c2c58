package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestServeSettingsPrecedence checks the one rule: flag > ARBOR_* >
// config file > default, for scalars, lists and durations.
func TestServeSettingsPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "arbor.toml")
	if err := os.WriteFile(file, []byte(`
listen = "127.0.0.1:9000"
slots = 12
allow-runtime = ["runc", "crun"]
shutdown-timeout = "5m"
rate-limit = 2.5
verbose = true
token = "from-file"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		args     []string
		env      map[string]string
		file     string
		key      string
		want     string
		wantFrom string
	}{
		{"default", nil, nil, "", "listen", "127.0.0.1:7777", "default"},
		{"file over default", nil, nil, file, "listen", "127.0.0.1:9000", "config " + file},
		{"env over file", nil, map[string]string{"ARBOR_LISTEN": "127.0.0.1:9100"}, file, "listen", "127.0.0.1:9100", "env ARBOR_LISTEN"},
		{"flag over env", []string{"--listen", "127.0.0.1:9200"}, map[string]string{"ARBOR_LISTEN": "127.0.0.1:9100"}, file, "listen", "127.0.0.1:9200", "flag"},
		{"int from file", nil, nil, file, "slots", "12", "config " + file},
		{"list from file", nil, nil, file, "allow-runtime", "[runc,crun]", "config " + file},
		{"list from env, comma-separated", nil, map[string]string{"ARBOR_ALLOW_RUNTIME": "crun"}, file, "allow-runtime", "[crun]", "env ARBOR_ALLOW_RUNTIME"},
		{"list flag replaces file", []string{"--allow-runtime", "runc"}, nil, file, "allow-runtime", "[runc]", "flag"},
		{"duration from file", nil, nil, file, "shutdown-timeout", "5m0s", "config " + file},
		{"duration from env", nil, map[string]string{"ARBOR_SHUTDOWN_TIMEOUT": "90s"}, file, "shutdown-timeout", "1m30s", "env ARBOR_SHUTDOWN_TIMEOUT"},
		{"float from file", nil, nil, file, "rate-limit", "2.5", "config " + file},
		{"bool from file", nil, nil, file, "verbose", "true", "config " + file},
		{"home from env", nil, map[string]string{"ARBOR_HOME": "/srv/arbor"}, "", "home", "/srv/arbor", "env ARBOR_HOME"},
		// ARBOR_TOKEN is the clients' token: the daemon never takes it.
		{"token ignores ARBOR_TOKEN", nil, map[string]string{"ARBOR_TOKEN": "client-secret"}, file, "token", "from-file", "config " + file},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newServe(&globals{})
			if err := cmd.ParseFlags(tc.args); err != nil {
				t.Fatal(err)
			}
			src, err := resolveSettings(cmd.Flags(), func(k string) string { return tc.env[k] }, tc.file)
			if err != nil {
				t.Fatal(err)
			}
			if got := cmd.Flags().Lookup(tc.key).Value.String(); got != tc.want {
				t.Errorf("%s = %q, want %q", tc.key, got, tc.want)
			}
			if got := src[tc.key].String(); got != tc.wantFrom {
				t.Errorf("%s from %q, want %q", tc.key, got, tc.wantFrom)
			}
		})
	}
}

// Every serve flag is a setting, with a config key and a variable.
func TestServeEveryFlagHasAConfigKey(t *testing.T) {
	cmd := newServe(&globals{})
	var b strings.Builder
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name == "config" || f.Name == "print-config" || f.Name == "help" || f.Name == "token" {
			return
		}
		b.WriteString(f.Name + " ")
	})
	for name := range strings.FieldsSeq(b.String()) {
		dir := t.TempDir()
		f := cmd.Flags().Lookup(name)
		val := f.DefValue
		if _, ok := f.Value.(interface{ GetSlice() []string }); ok {
			val = "[]"
		} else if f.Value.Type() == "string" || f.Value.Type() == "duration" {
			val = `"` + val + `"`
		}
		p := filepath.Join(dir, "c.toml")
		os.WriteFile(p, []byte(name+" = "+val+"\n"), 0o600)
		c := newServe(&globals{})
		src, err := resolveSettings(c.Flags(), func(string) string { return "" }, p)
		if err != nil {
			t.Errorf("key %s: %v", name, err)
			continue
		}
		if src[name].kind != "config" {
			t.Errorf("key %s from %s, want the config file", name, src[name])
		}
	}
}

func TestServeConfigErrorsNameTheFix(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{`lisen = "x"`, `unknown key "lisen"`},
		{`slots = "many"`, `key "slots": "many" is not a valid int`},
		{`listen = ["a", "b"]`, `key "listen": takes one value`},
		{`listen = `, "config file"},
	} {
		p := filepath.Join(dir, "c.toml")
		os.WriteFile(p, []byte(tc.content+"\n"), 0o600)
		_, err := resolveSettings(newServe(&globals{}).Flags(), func(string) string { return "" }, p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want it to say %q", tc.content, err, tc.want)
		}
	}
}

// arbor serve --print-config prints a config file of the resolved values,
// each with its source, without starting the daemon.
func TestServePrintConfig(t *testing.T) {
	p := filepath.Join(t.TempDir(), "arbor.toml")
	os.WriteFile(p, []byte("slots = 3\ntoken = \"s3cret\"\ndb = \"postgres://arbor:pw-s3cret@db.internal/arbor\"\n"), 0o600)
	t.Setenv("ARBOR_MAX_TIMEOUT", "60")
	var out, errb bytes.Buffer
	code := Main(context.Background(), []string{"serve", "--config", p, "--listen", "127.0.0.1:1", "--checkpoint-ttl", "3d", "--print-config"}, nil, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{
		`listen = "127.0.0.1:1"`, "# flag",
		`checkpoint-ttl = "3d"`,
		"slots = 3", "# config " + p,
		"max-timeout = 60", "# env ARBOR_MAX_TIMEOUT",
		`shutdown-timeout = "1m0s"`, "# default",
		"# token = (set, not shown)",
		`db = "postgres://arbor:xxxxx@db.internal/arbor"`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--print-config output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "s3cret") {
		t.Error("--print-config printed the token or the database password")
	}
	// The output is itself a valid config file.
	again := filepath.Join(t.TempDir(), "again.toml")
	os.WriteFile(again, out.Bytes(), 0o600)
	if _, err := resolveSettings(newServe(&globals{}).Flags(), func(string) string { return "" }, again); err != nil {
		t.Errorf("--print-config output is not a valid config file: %v", err)
	}
}
